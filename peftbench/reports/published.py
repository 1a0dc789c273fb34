"""Published reference rows, and the rules for comparing our results with them.

Sources, one per row in its `source` column: the RLRR paper (Dong et al., "Low-Rank Rescaled Vision
Transformer Fine-Tuning", CVPR 2024, arXiv 2403.19067), Table 1 (VTAB-1k) and Table 2 (FGVC), as printed;
the NOAH, FacT, Convpass and RepAdapter papers' VTAB-1k rows; PETL_Vision's own runs of LN tuning, DiffFit
and the Houlsby / Pfeiffer adapters; the Swin-B and ConvNeXt-B rows of FacT (Table 2) and Convpass (Table 3),
which print group means only. They sit in `tasks/reference/published_<suite>.csv` with backbone,
protocol and source columns, read here as package data of `peftbench.tasks`.

- Means are recomputed from the per-task cells; the CSV's printed mean columns are then ignored
  (they are rounded from unrounded numbers and sometimes disagree with the cells, e.g. RLRR's natural
  mean is printed 82.7, the cells give 82.64). A row whose source prints no cells (the Swin-B and
  ConvNeXt-B rows, the few-shot rows) keeps its printed group means; its two suite means are recomputed
  from them (the flat mean weighting each group by its number of tasks, as the cells would).
- A published row is compared with ours only when backbone, method variant and protocol all match
  (`pairing`); otherwise the reason names the first mismatch.
"""

from __future__ import annotations

import csv
import dataclasses
import math
from dataclasses import dataclass, field
from importlib import resources
from statistics import fmean
from typing import Mapping, NamedTuple

import pandas as pd

from ..errors import PeftbenchError
from ..spec import check_protocol
from ..suites import Suite
from . import leaderboard

REFERENCE_PACKAGE = "peftbench.tasks"
REFERENCE_FOLDER = "reference"
REFERENCE_FILES = {"vtab1k": "published_vtab1k.csv", "fgvc": "published_fgvc.csv",
                   "fewshot_fgvc": "published_fewshot_fgvc.csv"}  # fmt: skip

_META_COLUMNS = ("method", "backbone", "protocol", "source")
_PARAMS_COLUMN = "params_m"

# Published backbone label -> the timm model name of the same weights (README: "Pretrained backbone").
# Only tagged names pair: a bare `vit_base_patch16_224` does not say which ImageNet-21k weights it holds.
BACKBONES = {
    "vit_b16_in21k": "vit_base_patch16_224.orig_in21k",  # Google's ViT-B_16.npz (VPT, NOAH, RLRR)
    "vit_b16_augreg_in21k": "vit_base_patch16_224.augreg_in21k",  # AugReg release (starred rows)
    "swin_b_in22k": "swin_base_patch4_window7_224.ms_in22k",  # microsoft's swin_base_patch4_window7_224_22k.pth
    "convnext_b_in22k": "convnext_base.fb_in22k",  # facebook's convnext_base_22k_224.pth
}
# Published backbone label -> its family (peftbench.anatomy): a board shows the published rows of its family.
BACKBONE_FAMILIES = {"vit_b16_in21k": "vit", "vit_b16_augreg_in21k": "vit", "swin_b_in22k": "swin",
                     "convnext_b_in22k": "convnext"}  # fmt: skip


class _ProtocolRule(NamedTuple):
    ours: str | None  # the peftbench protocol that reproduces it (None: none does)
    label: str  # how a reason names the published protocol


# The CSVs' protocol column -> our protocol (README: "Which test number").
PUBLISHED_PROTOCOLS = {
    "tune": _ProtocolRule("tune", "tune"),  # VPT-sourced: val-tuned, last epoch, mean of 5 seeds
    "best-test": _ProtocolRule("best-test", "best-over-test"),  # LoRA (NOAH), SSF, RLRR: max test top-1 over epochs
    "unknown": _ProtocolRule(None, "not stated"),  # FGVC LoRA (RLRR names no source); Swin-B, ConvNeXt-B, few-shot
}


class _Variant(NamedTuple):
    ours: str | None  # our method this published row pairs with (None: none of ours)
    title: str  # the row's name as the paper prints it
    what: str  # what the published row actually is


_NOAH_LORA = _Variant("lora_qkv", "LoRA", "NOAH's LoRA-8 on the fused qkv")
_VPT_ADAPTER = _Variant(None, "Adapter", "VPT's adapter")
# Per suite, published rows whose name does not mean our method of that name (README: "Which variant a
# published row is"). Every other published method pairs with our method of the same name.
PUBLISHED_VARIANTS = {
    "vtab1k": {"lora": _NOAH_LORA, "adapter": _VPT_ADAPTER},
    "fgvc": {"lora": _NOAH_LORA, "adapter": _VPT_ADAPTER},
    "fewshot_fgvc": {"lora": _NOAH_LORA},  # NOAH's own baselines: its Adapter row is NOAH's Adapter-8, ours
}
# What our same-named methods are, for the reasons above.
OUR_VARIANTS = {"lora": "q/v LoRA", "adapter": "NOAH's Adapter-8"}


@dataclass(frozen=True)
class PublishedRow:
    """One row of a published table, cells as printed."""

    method: str  # the CSV's name; see PUBLISHED_VARIANTS for rows that are another variant
    suite: str  # the suite whose reference file holds it
    backbone: str  # a key of BACKBONES
    protocol: str  # a key of PUBLISHED_PROTOCOLS
    source: str  # paper, table and repository@commit the row was read from
    values: dict[str, float] = field(hash=False)  # top-1 (%) by the suite's task name, in suite order
    params_as_printed: float = math.nan  # Params (M) as printed: RLRR counts the head, older rows may not
    # top-1 (%) by group as printed, kept only for a row without cells (its source prints group means only)
    group_means_as_printed: dict[str, float] = field(default_factory=dict, hash=False)


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
    """The printed mean columns (natural_mean, mean_19, mean_5, ...), used only by rows without cells."""
    return column.endswith("_mean") or column.startswith("mean_")


def _parse_row(raw: dict[str, str], suite: Suite, filename: str) -> PublishedRow:
    """One CSV record as a PublishedRow; task columns are checked against the suite's tasks, and an
    empty cell means the source does not print it."""
    values, printed_means = {}, {}
    for column, cell in raw.items():
        if column in _META_COLUMNS or column == _PARAMS_COLUMN or not cell:
            continue
        if _is_printed_mean(column):
            printed_means[column.removesuffix("_mean")] = float(cell)
        else:
            values[suite.task(column).name] = float(cell)  # suite.task raises on an unknown column
    groups = {} if values else {g: printed_means[g] for g in suite.groups if g in printed_means}
    row = PublishedRow(
        raw["method"],
        suite.name,
        raw["backbone"],
        raw["protocol"],
        raw["source"],
        _in_suite_order(values, suite),
        float(raw[_PARAMS_COLUMN]),
        groups,
    )
    _check_row(row, suite, filename)
    return row


def _check_row(row: PublishedRow, suite: Suite, where: str) -> None:
    """Every task present (or, for a source that prints none, every group mean), backbone and protocol
    known: the reference data is only useful complete."""
    if not row.values and row.group_means_as_printed:
        what, missing = "group means", [f"{g}_mean" for g in suite.groups if g not in row.group_means_as_printed]
    else:
        what, missing = "tasks", [t.name for t in suite.tasks if t.name not in row.values]
    if missing:
        raise PeftbenchError(f"{where}: row '{row.method}' lacks {what} {', '.join(missing)}")
    if row.backbone not in BACKBONES or row.backbone not in BACKBONE_FAMILIES:
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
    """`means` of a published row's cells (never its printed means). RLRR, VTAB-1k: 74.54 flat, 76.75 grouped.

    A row without cells has its group means as printed, their mean, and the flat mean the cells would give:
    each group mean weighted by its number of tasks (exact up to the printed rounding).
    """
    _check_row(row, suite, "published row")
    if row.values:
        return means(row.values, suite)
    printed = row.group_means_as_printed
    sizes = {g: sum(t.group == g for t in suite.tasks) for g in suite.groups}
    flat = sum(printed[g] * sizes[g] for g in suite.groups) / len(suite.tasks)
    groups = {leaderboard.group_column(g): printed[g] for g in suite.groups}
    return {**groups, leaderboard.FLAT_MEAN: flat, leaderboard.GROUP_MEAN: fmean(printed.values())}


# ---------------------------------------------------------------------------------------------- pairing


def _variant(published: PublishedRow) -> _Variant | None:
    return PUBLISHED_VARIANTS.get(published.suite, {}).get(published.method)


def paired_method(published: PublishedRow) -> str | None:
    """Our method that reproduces a published row's method (None: none of ours)."""
    variant = _variant(published)
    return variant.ours if variant else published.method


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
    if paired_method(published) == method:
        return None
    variant = _variant(published)
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
    """Ours minus published, per task (suite order) and for each recomputed mean; NaN where either is missing.

    `ours` maps task names (or their aliases) to top-1 (%). Whether the two are comparable is `pairing`'s question.
    """
    ours_by_task = {suite.task(name).name: float(value) for name, value in ours.items()}
    result = {t.name: ours_by_task.get(t.name, math.nan) - published.values.get(t.name, math.nan) for t in suite.tasks}
    published_means = recomputed_means(published, suite)
    for key, value in means(ours_by_task, suite).items():
        result[key] = value - published_means[key]
    return result


PARAMS_AS_PRINTED = "Params (M) as printed"


def rows_for(board: "leaderboard.Leaderboard") -> list[PublishedRow]:
    """The suite's published rows of the board's backbone families (a ViT board is not shown Swin rows)."""
    families = {run["family"] for run in board.row_runs.values()}
    return [p for p in published_rows(board.suite) if not families or BACKBONE_FAMILIES[p.backbone] in families]


def with_published(board: "leaderboard.Leaderboard") -> "leaderboard.Leaderboard":
    """`board` plus the published rows of its families (means recomputed from their cells, Params as printed)
    and, under each, a delta row (ours − published) for every one of our rows that is like with like;
    a published row with no such partner gets a note with the reason."""
    rows, notes, shown = [], list(board.notes), rows_for(board)
    for published in shown:
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
            elif run["method"] in (published.method, paired_method(published)):
                reasons.append(f"{ours}: {verdict.reason}")
        if reasons:
            notes.append(f"{label}: no delta ({'; '.join(reasons)}).")
    if not rows:
        return board
    from_groups = " (a row without cells: from its group means as printed, each weighted by its tasks)"
    without_cells = "" if all(p.values for p in shown) else from_groups
    notes.append(
        f"Published rows: {'; '.join(f'{p.method}: {p.source}' for p in shown)}. Their means are "
        f"recomputed from the cells{without_cells}; {PARAMS_AS_PRINTED} mixes head conventions "
        "(tasks/reference/SOURCES.md). Δ rows: ours − published, only between the same backbone, method variant "
        "and protocol."
    )
    extra = pd.DataFrame(rows).set_index("Method")
    table = pd.concat([board.table, extra]).reindex(columns=[*board.table.columns, PARAMS_AS_PRINTED])
    spread = board.spread.reindex(index=table.index, columns=table.columns)
    return dataclasses.replace(board, table=table, spread=spread, notes=notes)
