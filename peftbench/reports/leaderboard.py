"""Leaderboards from records: the one table structure every rendering and plot reads.

Rows are (method, backbone) pairs; columns the suite's tasks, one mean per group, the flat mean
over tasks, the mean of group means, and the trainable parameters (millions) averaged over the
suite's tasks with and without the head. A cell averages the seeds of the newest settings of that
method on that task (± their standard deviation); the suite means carry the standard deviation of
the per-seed suite means. A mean that needs a missing cell is left empty. Tune trials (scored on
val) never enter a table; best-test rows show the test-selected maximum and are labelled so.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from statistics import fmean
from typing import Any, Iterable, Mapping

import pandas as pd

from ..record import Record
from ..suites import Suite

MISSING = "–"
FLAT_MEAN = "Mean (flat)"
GROUP_MEAN = "Mean of group means"
PARAMS_WITH_HEAD = "Params (M) incl. head"
PARAMS_WITHOUT_HEAD = "Params (M) excl. head"


def group_column(group: str) -> str:
    return f"{group.capitalize()} (mean)"


@dataclass
class Leaderboard:
    suite: Suite
    table: pd.DataFrame  # index: row label; numeric columns, NaN where missing
    notes: list[str] = field(default_factory=list)
    spread: pd.DataFrame = field(default_factory=pd.DataFrame)  # std over seeds, same labels; NaN with one seed
    efficiency: pd.DataFrame = field(default_factory=pd.DataFrame)  # per row: time, throughput, memory, device
    provenance: list[str] = field(default_factory=list)  # what regenerates the table
    row_runs: dict[str, dict[str, str]] = field(default_factory=dict)  # label -> method, model, family, protocol
    marks: dict[tuple[str, str], str] = field(default_factory=dict)  # (row, column) -> ▲ / ▼ (report --significance)
    cell_keys: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)  # (row, task) -> its records' keys

    @property
    def is_empty(self) -> bool:
        return self.table.empty


def runs_frame(records: Iterable[Record]) -> pd.DataFrame:
    """One row per finished (`ok`) run or tune final; trials (scored on val) never enter a table."""
    rows = []
    for record in records:
        if not record.ok or record.kind == "trial":
            continue
        spec = record.spec
        rows.append(
            {
                "key": record.key,
                "method_name": spec.method,
                "suite": spec.suite,
                "task": spec.task,
                "method": method_label(record),
                "model": spec.model,
                "family": backbone_family(record),
                "weights": spec.weights,
                "protocol": spec.protocol,
                "seed": spec.seed,
                "settings": json.dumps(spec.settings, sort_keys=True),
                "finished_at": record.provenance.finished_at,
                "top1": record.metrics.best_test_top1 if spec.protocol == "best-test" else record.metrics.top1,
                "trainable": record.params.trainable,
                "trainable_without_head": record.params.trainable_without_head,
                **_efficiency_fields(record),
                **_provenance_fields(record),
            }
        )
    return pd.DataFrame(rows)


def backbone_family(record: Record) -> str:
    """The backbone's family (vit, swin, convnext, eva) as the record's anatomy line names it; records older
    than that line are ViTs, the only family peftbench built then."""
    return (record.execution.backbone or "vit").split(",")[0]


def method_label(record: Record) -> str:
    """The method's name, with the variant the method reports (peft: the tuner and its rank) when it does."""
    label = (record.adapted or {}).get("label")
    return f"{record.spec.method} ({label})" if label else record.spec.method


def _efficiency_fields(record: Record) -> dict[str, Any]:
    timing, execution = record.timing, record.execution
    eval_size = record.data.eval_size if record.data else None
    nan = float("nan")
    # older records lack the figure, and timed a head-only run's evaluation on features cached in training
    eval_rate = timing.eval_images_per_second or (
        eval_size / timing.eval_seconds
        if timing.eval_seconds and eval_size and not execution.used_cached_features
        else nan
    )
    return {
        "train_seconds": nan if timing.train_seconds is None else timing.train_seconds,
        "train_images_per_second": nan if timing.train_images_per_second is None else timing.train_images_per_second,
        "eval_images_per_second": eval_rate,
        "peak_mb": record.memory.peak_mb if record.memory else nan,
        "evaluated_merged": execution.evaluated_merged,
        "device": record.provenance.device,
    }


def _provenance_fields(record: Record) -> dict[str, Any]:
    fingerprints = (record.data.fingerprints if record.data else {}) or {}
    digests = sorted(f"{split}:{(fp or {}).get('sha256', '?')[:12]}" for split, fp in fingerprints.items())
    return {
        "version": record.provenance.versions.get("peftbench", "?"),
        "git_commit": record.provenance.git_commit or "?",
        "recipe": record.spec.recipe,
        "data": " ".join(digests),
    }


def _row_label(method: str, backbone: str, protocol: str, several_backbones: bool, several_protocols: bool) -> str:
    label = f"{method} [{backbone}]" if several_backbones else method
    return f"{label} ({protocol})" if several_protocols else label


def _newest_settings(cell: pd.DataFrame) -> pd.DataFrame:
    """The runs of a (row, task) cell that share the most recently finished settings."""
    newest = cell.sort_values("finished_at").iloc[-1]["settings"]
    return cell[cell["settings"] == newest]


def build_leaderboard(runs: pd.DataFrame, suite: Suite) -> Leaderboard:
    """The suite's leaderboard from its runs (other suites' runs are ignored)."""
    runs = runs[runs["suite"] == suite.name] if not runs.empty else runs
    task_names = [t.name for t in suite.tasks]
    if runs.empty:
        return Leaderboard(suite, pd.DataFrame(columns=task_names), ["no finished runs for this suite"])
    runs = runs.assign(backbone=runs["model"] + " (" + runs["weights"].str.slice(0, 12) + ")")
    several = runs["backbone"].nunique() > 1
    several_protocols = runs["protocol"].nunique() > 1
    cells = runs.groupby(["method", "backbone", "protocol", "task"], group_keys=False)[runs.columns.tolist()].apply(
        _newest_settings
    )
    summary = (
        cells.groupby(["method", "backbone", "protocol", "task"])
        .agg(
            top1=("top1", "mean"),
            std=("top1", "std"),
            seeds=("seed", "nunique"),
            trainable=("trainable", "mean"),
            trainable_without_head=("trainable_without_head", "mean"),
        )
        .reset_index()
    )
    rows, spreads, efficiency, row_runs, cell_keys = [], [], [], {}, {}
    for (method, backbone, protocol), part in summary.groupby(["method", "backbone", "protocol"], sort=False):
        label = _row_label(method, backbone, protocol, several, several_protocols)
        by_task = part.set_index("task")
        row: dict[str, Any] = {"Method": label, **_means(suite, by_task["top1"])}
        complete = all(name in by_task.index for name in task_names)
        row[PARAMS_WITH_HEAD] = by_task["trainable"].mean() / 1e6 if complete else float("nan")
        row[PARAMS_WITHOUT_HEAD] = by_task["trainable_without_head"].mean() / 1e6 if complete else float("nan")
        row["Seeds"] = int(by_task["seeds"].min())
        row["Protocol"] = protocol
        rows.append(row)
        runs_of_row = cells[
            (cells["method"] == method) & (cells["backbone"] == backbone) & (cells["protocol"] == protocol)
        ]
        spreads.append(
            {"Method": label, **by_task["std"].reindex(task_names).to_dict(), **_seed_spread(suite, runs_of_row)}
        )
        efficiency.append({"Method": label, **_efficiency_row(runs_of_row)})
        row_runs[label] = {
            "method": method,
            "method_name": runs_of_row["method_name"].iloc[0],
            "model": runs_of_row["model"].iloc[0],
            "family": runs_of_row["family"].iloc[0],
            "protocol": protocol,
        }
        for task, keys in runs_of_row.groupby("task")["key"]:
            cell_keys[(label, task)] = tuple(sorted(keys))
    table = pd.DataFrame(rows).set_index("Method")
    spread = pd.DataFrame(spreads).set_index("Method").reindex(columns=table.columns)
    return Leaderboard(
        suite,
        table,
        _notes(suite, table),
        spread,
        pd.DataFrame(efficiency).set_index("Method"),
        _provenance(cells),
        row_runs,
        cell_keys=cell_keys,
    )


TRAIN_TIME = "Train time (min, all tasks)"
TRAIN_SPEED = "Train images/s"
PEAK_MEMORY = "Peak memory (GiB)"
INFERENCE_SPEED = "Inference images/s"


def _efficiency_row(runs: pd.DataFrame) -> dict[str, Any]:
    """Training time summed over tasks (mean over seeds), mean throughputs, the peak memory, the devices."""
    per_task = runs.groupby("task")["train_seconds"].mean()
    merged = runs["evaluated_merged"]
    return {
        TRAIN_TIME: per_task.sum(min_count=1) / 60,
        TRAIN_SPEED: runs["train_images_per_second"].mean(),
        PEAK_MEMORY: runs["peak_mb"].max() / 1024,
        INFERENCE_SPEED: runs["eval_images_per_second"].mean(),
        "Inference on": "merged weights" if merged.all() else "unmerged" if not merged.any() else "mixed",
        "Device": "; ".join(sorted(runs["device"].unique())),
    }


def _provenance(cells: pd.DataFrame) -> list[str]:
    """Versions, commits, backbones with weights, recipes, data fingerprints and protocols behind the table."""

    def joined(column: str) -> str:
        return ", ".join(sorted(str(v) for v in cells[column].unique()))

    lines = [
        f"peftbench {joined('version')}; git commit {joined('git_commit')}",
        f"backbones: {', '.join(sorted(set(cells['model'] + ' (weights ' + cells['weights'].str.slice(0, 16) + ')')))}",
        f"protocols: {joined('protocol')}; recipes: {joined('recipe')}",
    ]
    data = cells.drop_duplicates("task").sort_values("task")
    lines.append(
        "data fingerprints (sha256 prefixes): " + "; ".join(f"{r.task} {r.data}" for r in data.itertuples() if r.data)
    )
    return lines


def suite_means(values: Mapping[str, float], suite: Suite) -> dict[str, float]:
    """Every group mean, the flat mean over tasks and the mean of group means (NaN where a task is missing)."""
    cell = lambda name: values.get(name, math.nan)  # noqa: E731
    result = {group_column(g): fmean(cell(t.name) for t in suite.tasks if t.group == g) for g in suite.groups}
    result[FLAT_MEAN] = fmean(cell(t.name) for t in suite.tasks)
    result[GROUP_MEAN] = fmean(result[group_column(g)] for g in suite.groups)
    return result


def _means(suite: Suite, top1: pd.Series) -> dict[str, float]:
    """Per-task values and the suite means a table shows (group means only when there are several groups)."""
    row = {t.name: top1.get(t.name, float("nan")) for t in suite.tasks}
    means = suite_means(row, suite)
    if len(suite.groups) == 1:
        means = {FLAT_MEAN: means[FLAT_MEAN]}
    return {**row, **means}


def _seed_spread(suite: Suite, runs: pd.DataFrame) -> dict[str, float]:
    """Standard deviation over seeds of each suite mean, from the seeds every task has."""
    by_seed = runs.pivot_table(index="seed", columns="task", values="top1").dropna()
    if len(by_seed) < 2:
        return {}
    per_seed = pd.DataFrame([_means(suite, values) for _, values in by_seed.iterrows()])
    return {k: per_seed[k].std() for k in per_seed.columns if k not in by_seed.columns}


def _notes(suite: Suite, table: pd.DataFrame) -> list[str]:
    n = len(suite.tasks)
    notes = [
        "Top-1 accuracy (%) on each task's test split, evaluated once after the last epoch; "
        "a cell is the mean over its seeds ± their standard deviation (column Seeds: the fewest seeds of any "
        "task in the row); a suite mean's ± is the standard deviation of the per-seed suite means.",
        f"{FLAT_MEAN}: mean over the {n} tasks.",
    ]
    if len(suite.groups) > 1:
        notes.append(f"{GROUP_MEAN}: mean of the {len(suite.groups)} group means ({', '.join(suite.groups)}).")
    notes.append(
        f"{PARAMS_WITH_HEAD}: trainable parameters averaged over the suite's tasks, classification head "
        f"included (the RLRR paper's convention); {PARAMS_WITHOUT_HEAD}: the same without the head."
    )
    if "best-test" in set(table.get("Protocol", [])):
        notes.append(
            "Protocol best-test: the maximum test top-1 over epochs (test-selected, as RLRR/NOAH/SSF "
            "report); not comparable with the other protocols' last-epoch numbers."
        )
    task_names = [t.name for t in suite.tasks]
    if table[task_names].isna().to_numpy().any():
        notes.append(
            f"{MISSING}: no finished run; means and parameter columns that need a missing task are left empty."
        )
    return notes
