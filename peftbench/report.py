"""Leaderboards from records: one results structure (a DataFrame), several renderings.

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

from .suites import Suite

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
    row_runs: dict[str, dict[str, str]] = field(default_factory=dict)  # label -> method, model, protocol of our rows

    @property
    def is_empty(self) -> bool:
        return self.table.empty


def runs_frame(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """One row per finished (`ok`) run."""
    rows = []
    for record in records:
        if record.get("status") != "ok" or record.get("kind") == "trial":
            continue
        spec = record["spec"]
        metrics = record["metrics"]
        rows.append(
            {
                "suite": spec["suite"],
                "task": spec["task"],
                "method": spec["method"],
                "model": spec["model"],
                "weights": spec["weights"],
                "protocol": spec["protocol"],
                "seed": spec["seed"],
                "settings": json.dumps(spec["settings"], sort_keys=True),
                "finished_at": record.get("finished_at", ""),
                "top1": metrics["best_test_top1"] if spec["protocol"] == "best-test" else metrics["test_top1"],
                "trainable": record["params"]["trainable"],
                "trainable_without_head": record["params"]["trainable_without_head"],
                **_efficiency_fields(record),
                **_provenance_fields(record),
            }
        )
    return pd.DataFrame(rows)


def _efficiency_fields(record: dict[str, Any]) -> dict[str, Any]:
    timing, data = record.get("timing", {}), record.get("data", {})
    eval_seconds, eval_size = timing.get("eval_seconds"), data.get("eval_size")
    return {
        "train_seconds": timing.get("train_seconds", float("nan")),
        "train_images_per_second": timing.get("train_images_per_second", float("nan")),
        # older records lack the figure, and timed a head-only run's evaluation on features cached in training
        "eval_images_per_second": timing.get("eval_images_per_second") or (
            eval_size / eval_seconds if eval_seconds and eval_size and not record.get("used_cached_features")
            else float("nan")),
        "peak_mb": record.get("memory", {}).get("peak_mb", float("nan")),
        "evaluated_merged": bool(record.get("evaluated_merged", False)),
        "device": record.get("device", "unknown"),
    }


def _provenance_fields(record: dict[str, Any]) -> dict[str, Any]:
    fingerprints = record.get("data", {}).get("fingerprints", {}) or {}
    digests = sorted(f"{split}:{(fp or {}).get('sha256', '?')[:12]}" for split, fp in fingerprints.items())
    return {"version": record.get("versions", {}).get("peftbench", "?"), "git_commit": record.get("git_commit") or "?",
            "recipe": record["spec"].get("recipe", "?"), "data": " ".join(digests)}


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
    cells = (
        runs.groupby(["method", "backbone", "protocol", "task"], group_keys=False)[runs.columns.tolist()]
        .apply(_newest_settings)
    )
    summary = (
        cells.groupby(["method", "backbone", "protocol", "task"])
        .agg(top1=("top1", "mean"), std=("top1", "std"), seeds=("seed", "nunique"), trainable=("trainable", "mean"),
             trainable_without_head=("trainable_without_head", "mean"))
        .reset_index()
    )
    rows, spreads, efficiency, row_runs = [], [], [], {}
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
        runs_of_row = cells[(cells["method"] == method) & (cells["backbone"] == backbone) & (cells["protocol"] == protocol)]
        spreads.append({"Method": label, **by_task["std"].reindex(task_names).to_dict(), **_seed_spread(suite, runs_of_row)})
        efficiency.append({"Method": label, **_efficiency_row(runs_of_row)})
        row_runs[label] = {"method": method, "model": runs_of_row["model"].iloc[0], "protocol": protocol}
    table = pd.DataFrame(rows).set_index("Method")
    spread = pd.DataFrame(spreads).set_index("Method").reindex(columns=table.columns)
    return Leaderboard(suite, table, _notes(suite, table), spread, pd.DataFrame(efficiency).set_index("Method"),
                       _provenance(cells), row_runs)


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

    lines = [f"peftbench {joined('version')}; git commit {joined('git_commit')}",
             f"backbones: {', '.join(sorted(set(cells['model'] + ' (weights ' + cells['weights'].str.slice(0, 16) + ')')))}",
             f"protocols: {joined('protocol')}; recipes: {joined('recipe')}"]
    data = cells.drop_duplicates("task").sort_values("task")
    lines.append("data fingerprints (sha256 prefixes): " + "; ".join(f"{r.task} {r.data}" for r in data.itertuples() if r.data))
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
        notes.append("Protocol best-test: the maximum test top-1 over epochs (test-selected, as RLRR/NOAH/SSF "
                     "report); not comparable with the other protocols' last-epoch numbers.")
    task_names = [t.name for t in suite.tasks]
    if table[task_names].isna().to_numpy().any():
        notes.append(f"{MISSING}: no finished run; means and parameter columns that need a missing task are left empty.")
    return notes


def _format_value(column: str, value: Any) -> str:
    if isinstance(value, str):
        return value
    if pd.isna(value):
        return MISSING
    if column.startswith("Params"):
        return f"{value:.2f}" if value >= 0.1 else f"{value:.4f}"
    if column == "Seeds":
        return str(int(value))
    return f"{value:.1f}"


def formatted(board: Leaderboard) -> pd.DataFrame:
    """The table as display strings; `mean ± std` where several seeds give a spread."""
    shown = board.table.apply(lambda column: column.map(lambda v: _format_value(column.name, v)))
    if board.spread.empty:
        return shown
    for label in shown.index:
        for column, std in board.spread.loc[label].items():
            if not pd.isna(std) and not pd.isna(board.table.at[label, column]):
                shown.at[label, column] = f"{shown.at[label, column]} ± {std:.1f}"
    return shown


FORMATS = ("md", "csv", "json", "latex", "html")


def render(board: Leaderboard, fmt: str) -> str:
    """The leaderboard as Markdown, CSV, JSON, LaTeX (booktabs) or HTML."""
    if fmt in ("latex", "html"):
        from . import tables

        return tables.render_latex(board, board.provenance) if fmt == "latex" else tables.render_html(board, board.provenance)
    if fmt == "md":
        return _render_markdown(board)
    if fmt == "csv":
        return _with_spread(board).to_csv(float_format="%.4f")
    if fmt == "json":
        rows = json.loads(_with_spread(board).reset_index().to_json(orient="records"))
        efficiency = json.loads(board.efficiency.reset_index().to_json(orient="records")) if not board.efficiency.empty else []
        return json.dumps({"suite": board.suite.name, "rows": rows, "efficiency": efficiency, "notes": board.notes,
                           "provenance": board.provenance}, indent=2) + "\n"
    raise ValueError(f"unknown format {fmt}; valid formats: {', '.join(FORMATS)}")


def _render_markdown(board: Leaderboard) -> str:
    from .tables import bold_markdown

    title = f"## {board.suite.name}: {board.suite.description}\n\n"
    if board.is_empty:
        return title + "\n".join(f"- {note}" for note in board.notes) + "\n"
    shown = bold_markdown(board, formatted(board))
    parts = [title + shown.to_markdown(colalign=("left",) + ("right",) * len(shown.columns), disable_numparse=True),
             "\n".join(f"- {note}" for note in board.notes + ["Bold: the best value of each accuracy column."])]
    if not board.efficiency.empty:
        parts.append("Efficiency (measured on the device named; inference on merged weights where the method folds):\n\n"
                     + _efficiency_strings(board.efficiency).to_markdown(disable_numparse=True))
    parts.append("Provenance:\n\n" + "\n".join(f"- {line}" for line in board.provenance))
    return "\n\n".join(parts) + "\n"


def _efficiency_strings(efficiency: pd.DataFrame) -> pd.DataFrame:
    def show(value: Any) -> str:
        if isinstance(value, str):
            return value
        return MISSING if pd.isna(value) else f"{value:.1f}" if value < 1000 else f"{value:,.0f}"

    return efficiency.apply(lambda column: column.map(show))


def _with_spread(board: Leaderboard) -> pd.DataFrame:
    """The table plus a `<column> std` column after each column that has a spread."""
    if board.spread.empty:
        return board.table
    out = board.table.copy()
    for column in board.spread.columns:
        if board.spread[column].notna().any():
            out.insert(out.columns.get_loc(column) + 1, f"{column} std", board.spread[column])
    return out
