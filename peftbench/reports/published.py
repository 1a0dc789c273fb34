"""Published reference rows, and the rules for comparing our results with them.

Sources, one per row in its `source` column: the RLRR paper (Dong et al., "Low-Rank Rescaled Vision
Transformer Fine-Tuning", CVPR 2024, arXiv 2403.19067), Table 1 (VTAB-1k) and Table 2 (FGVC), as printed;
the NOAH, FacT, Convpass and RepAdapter papers' VTAB-1k rows; PETL_Vision's own runs of LN tuning, DiffFit
and the Houlsby / Pfeiffer adapters. They sit in `tasks/reference/published_<suite>.csv` with backbone,
protocol and source columns, read here as package data of `peftbench.tasks`.

- Means are always recomputed from the per-task cells; the CSV's printed mean columns are ignored
  (they are rounded from unrounded numbers and sometimes disagree with the cells, e.g. RLRR's natural
  mean is printed 82.7, the cells give 82.64).
- A published row is compared with ours only when backbone, method variant and protocol all match
  (`pairing`); otherwise the reason names the first mismatch.
"""

from __future__ import annotations

import csv
import dataclasses
import math
from dataclasses import dataclass, field
from importlib import resources
from typing import Mapping, NamedTuple

import pandas as pd

from ..errors import PeftbenchError
from ..spec import check_protocol
from ..suites import Suite
from . import leaderboard

REFERENCE_PACKAGE = "peftbench.tasks"
REFERENCE_FOLDER = "reference"
REFERENCE_FILES = {"vtab1k": "published_vtab1k.csv", "fgvc": "published_fgvc.csv"}

_META_COLUMNS = ("method", "backbone", "protocol", "source")
_PARAMS_COLUMN = "params_m"

# Published backbone label -> the timm model name of the same weights (README: "Pretrained backbone").
# Only tagged names pair: a bare `vit_base_patch16_224` does not say which ImageNet-21k weights it holds.
BACKBONES = {
    "vit_b16_in21k": "vit_base_patch16_224.orig_in21k",  # Google's ViT-B_16.npz (VPT, NOAH, RLRR)
    "vit_b16_augreg_in21k": "vit_base_patch16_224.augreg_in21k",  # AugReg release (starred rows)
}


class _ProtocolRule(NamedTuple):
    ours: str | None  # the peftbench protocol that reproduces it (None: none does)
    label: str  # how a reason names the published protocol


# The CSVs' protocol column -> our protocol (README: "Which test number").
PUBLISHED_PROTOCOLS = {
    "tune": _ProtocolRule("tune", "tune"),  # VPT-sourced: val-tuned, last epoch, mean of 5 seeds
    "best-test": _ProtocolRule("best-test", "best-over-test"),  # LoRA (NOAH), SSF, RLRR: max test top-1 over epochs
    "unknown": _ProtocolRule(None, "not stated"),  # FGVC LoRA: the RLRR paper names no source or protocol
}


class _Variant(NamedTuple):
    ours: str | None  # our method this published row pairs with (None: none of ours)
    title: str  # the row's name as the paper prints it
    what: str  # what the published row actually is


# Published rows whose name does not mean our method of that name (README: "Which variant a published row is").
# Every other published method pairs with our method of the same name.
PUBLISHED_VARIANTS = {
    "lora": _Variant("lora_qkv", "LoRA", "NOAH's LoRA-8 on the fused qkv"),
    "adapter": _Variant(None, "Adapter", "VPT's adapter"),
}
# What our same-named methods are, for the reasons above.
OUR_VARIANTS = {"lora": "q/v LoRA", "adapter": "NOAH's Adapter-8"}


@dataclass(frozen=True)
class PublishedRow:
    """One row of a published table, cells as printed."""

    method: str  # the CSV's name; see PUBLISHED_VARIANTS for rows that are another variant
    backbone: str  # a key of BACKBONES
    protocol: str  # a key of PUBLISHED_PROTOCOLS
    source: str  # paper, table and repository@commit the row was read from
    values: dict[str, float] = field(hash=False)  # top-1 (%) by the suite's task name, in suite order
    params_as_printed: float = math.nan  # Params (M) as printed: RLRR counts the head, older rows may not


@dataclass(frozen=True)
class Pairing:
    """Whether a published row and one of our (method, model, protocol) cells measure the same thing."""

    comparable: bool
    reason: str  # the first mismatch in one short phrase; "" when comparable


# ---------------------------------------------------------------------------------------------- loading


def published_rows(suite: Suite) -> list[PublishedRow]:
    """The published rows for `suite` (tasks/reference/published_<suite>.csv); [] for a suite without one."""
    filename = REFERENCE_FILES.get(suite.name)
    if filename is None:
        return []
    return [_parse_row(raw, suite, filename) for raw in _read_csv(filename)]


def _read_csv(filename: str) -> list[dict[str, str]]:
    """The CSV's records, skipping the `#` provenance lines."""
    text = resources.files(REFERENCE_PACKAGE).joinpath(REFERENCE_FOLDER, filename).read_text(encoding="utf-8")
    return list(csv.DictReader(line for line in text.splitlines() if not line.startswith("#")))


def _is_printed_mean(column: str) -> bool:
    """The printed mean columns (natural_mean, mean_19, mean_5, ...), which are not used."""
    return column.endswith("_mean") or column.startswith("mean_")


def _parse_row(raw: dict[str, str], suite: Suite, filename: str) -> PublishedRow:
    """One CSV record as a PublishedRow; task columns are checked against the suite's tasks."""
    values = {}
    for column, cell in raw.items():
        if column in _META_COLUMNS or column == _PARAMS_COLUMN or _is_printed_mean(column):
            continue
        values[suite.task(column).name] = float(cell)  # suite.task raises on an unknown column
    row = PublishedRow(
        raw["method"],
        raw["backbone"],
        raw["protocol"],
        raw["source"],
        _in_suite_order(values, suite),
        float(raw[_PARAMS_COLUMN]),
    )
    _check_row(row, suite, filename)
    return row


def _check_row(row: PublishedRow, suite: Suite, where: str) -> None:
    """Every task present, backbone and protocol known: the reference data is only useful complete."""
    missing = [t.name for t in suite.tasks if t.name not in row.values]
    if missing:
        raise PeftbenchError(f"{where}: row '{row.method}' lacks tasks {', '.join(missing)}")
    if row.backbone not in BACKBONES:
        raise PeftbenchError(f"{where}: unknown backbone '{row.backbone}'; known: {', '.join(BACKBONES)}")
    if row.protocol not in PUBLISHED_PROTOCOLS:
        raise PeftbenchError(f"{where}: unknown protocol '{row.protocol}'; known: {', '.join(PUBLISHED_PROTOCOLS)}")


def _in_suite_order(values: Mapping[str, float], suite: Suite) -> dict[str, float]:
    return {t.name: values[t.name] for t in suite.tasks if t.name in values}


# ------------------------------------------------------------------------------------------------ means


def means(values: Mapping[str, float], suite: Suite) -> dict[str, float]:
    """Per-group means, the flat mean over tasks and the mean of group means (NaN where a task is missing).

    Keys are the leaderboard's column names (peftbench.reports.leaderboard). Both suite means are given, labelled,
    because papers mix them (README: "Mean"): RLRR/SSF/VPT print the flat one, NOAH/PACE the other.
    """
    return leaderboard.suite_means(values, suite)


def recomputed_means(row: PublishedRow, suite: Suite) -> dict[str, float]:
    """`means` of a published row's cells (never its printed means). RLRR, VTAB-1k: 74.54 flat, 76.75 grouped."""
    _check_row(row, suite, "published row")
    return means(row.values, suite)


# ---------------------------------------------------------------------------------------------- pairing


def paired_method(published_method: str) -> str | None:
    """Our method that reproduces a published row's method (None: none of ours)."""
    variant = PUBLISHED_VARIANTS.get(published_method)
    return variant.ours if variant else published_method


def pairing(published: PublishedRow, method: str, model: str, protocol: str) -> Pairing:
    """Whether our `method` on timm `model` under our `protocol` is comparable with `published`.

    Checked in order (README: "A comparison must match method variant, backbone and protocol"):
    the published row states a protocol; backbone; method variant; protocol.
    """
    check_protocol(protocol)
    for mismatch in (
        _unstated(published),
        _backbone_mismatch(published, model),
        _method_mismatch(published, method),
        _protocol_mismatch(published, protocol),
    ):
        if mismatch:
            return Pairing(False, mismatch)
    return Pairing(True, "")


def _unstated(published: PublishedRow) -> str | None:
    """A row of unknown provenance (FGVC LoRA) is comparable with nothing, whatever its name says."""
    return "published row's protocol is not stated" if PUBLISHED_PROTOCOLS[published.protocol].ours is None else None


def _backbone_mismatch(published: PublishedRow, model: str) -> str | None:
    if BACKBONES.get(published.backbone) == model:
        return None
    return f"backbone differs (published {published.backbone}, ours {model})"


def _method_mismatch(published: PublishedRow, method: str) -> str | None:
    if paired_method(published.method) == method:
        return None
    variant = PUBLISHED_VARIANTS.get(published.method)
    if variant and method == published.method:  # same name, different variant
        return (
            f"published {variant.title} row is {variant.what} ({published.params_as_printed:g} M), "
            f"not {method} ({OUR_VARIANTS[method]})"
        )
    return f"method differs (published {published.method}, ours {method})"


def _protocol_mismatch(published: PublishedRow, protocol: str) -> str | None:
    rule = PUBLISHED_PROTOCOLS[published.protocol]
    if rule.ours == protocol:
        return None
    return f"protocol differs (published {rule.label}, ours {protocol})"


# ----------------------------------------------------------------------------------------------- deltas


def deltas(ours: Mapping[str, float], published: PublishedRow, suite: Suite) -> dict[str, float]:
    """Ours minus published, per task (suite order) and for each recomputed mean; NaN where ours is missing.

    `ours` maps task names (or their aliases) to top-1 (%). Whether the two are comparable is `pairing`'s question.
    """
    ours_by_task = {suite.task(name).name: float(value) for name, value in ours.items()}
    result = {t.name: ours_by_task.get(t.name, math.nan) - published.values[t.name] for t in suite.tasks}
    published_means = recomputed_means(published, suite)
    for key, value in means(ours_by_task, suite).items():
        result[key] = value - published_means[key]
    return result


PARAMS_AS_PRINTED = "Params (M) as printed"


def with_published(board: "leaderboard.Leaderboard") -> "leaderboard.Leaderboard":
    """`board` plus the suite's published rows (means recomputed from their cells, Params as printed)
    and, under each, a delta row (ours − published) for every one of our rows that is like with like;
    a published row with no such partner gets a note with the reason."""
    rows, notes = [], list(board.notes)
    for published in published_rows(board.suite):
        label = f"{published.method} (published, {published.backbone}, {published.protocol})"
        rows.append(
            {
                "Method": label,
                **published.values,
                **recomputed_means(published, board.suite),
                PARAMS_AS_PRINTED: published.params_as_printed,
                "Protocol": published.protocol,
            }
        )
        reasons = []
        for ours, run in board.row_runs.items():
            verdict = pairing(published, run["method"], run["model"], run["protocol"])
            if verdict.comparable:
                values = board.table.loc[ours, [t.name for t in board.suite.tasks]].to_dict()
                rows.append(
                    {
                        "Method": f"Δ {ours} − published",
                        **deltas(values, published, board.suite),
                        "Protocol": run["protocol"],
                    }
                )
            elif run["method"] in (published.method, paired_method(published.method)):
                reasons.append(f"{ours}: {verdict.reason}")
        if reasons:
            notes.append(f"{label}: no delta ({'; '.join(reasons)}).")
    if not rows:
        return board
    notes.append(
        f"Published rows: {'; '.join(f'{p.method}: {p.source}' for p in published_rows(board.suite))}. Their means are "
        f"recomputed from the cells; {PARAMS_AS_PRINTED} mixes head conventions (tasks/reference/SOURCES.md). "
        "Δ rows: ours − published, only between the same backbone, method variant and protocol."
    )
    extra = pd.DataFrame(rows).set_index("Method")
    table = pd.concat([board.table, extra]).reindex(columns=[*board.table.columns, PARAMS_AS_PRINTED])
    spread = board.spread.reindex(index=table.index, columns=table.columns)
    return dataclasses.replace(board, table=table, spread=spread, notes=notes)
