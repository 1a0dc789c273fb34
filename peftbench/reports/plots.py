"""Figures from a leaderboard (PNG or SVG, chosen by the output path's suffix).

- `pareto_plot`: a suite mean (y, top-1 %) against trainable parameters in millions (x, log scale), one
  labelled point per row with ± the standard deviation over seeds where there are several seeds, and
  the Pareto front (the rows that no other row beats with as few or fewer parameters) as a dashed
  staircase. A log axis cannot show 0, so rows with no trainable parameters (a linear probe counted
  without its head) are drawn hollow one decade below the smallest non-zero count (at 0.001 M when no
  row has any) and labelled "<row> (0 params)".
- `accuracy_vs_time_plot`: the same mean against training time the caller measured per row.
- `delta_heatmap`: per-task top-1 change (row − baseline, in points) for every other row; tasks ordered
  and labelled by suite group, then the flat mean; blue better, red worse, on a colour scale symmetric
  about 0; a cell without a number on either side is left grey and blank.
- `cd_diagram`: the critical-difference diagram of the rows across the suite's tasks: Friedman's test,
  then the Nemenyi critical difference (Demšar, JMLR 2006), rows joined where they are not told apart.

Matplotlib is imported inside the functions (so importing this module, or peftbench.reports, stays
cheap) and only through its object-oriented `Figure` API, which renders with Agg without pyplot:
nothing needs a display and no global backend is switched. SVG keeps text as <text> elements.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Collection, Mapping

import numpy as np
import pandas as pd

from ..errors import PeftbenchError
from .leaderboard import FLAT_MEAN, PARAMS_WITH_HEAD, PARAMS_WITHOUT_HEAD, Leaderboard

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

FORMATS = (".png", ".svg")
DPI = 200
FIGSIZE = (6.0, 4.5)  # inches: 1200 x 900 px at DPI before the tight bounding box trims or grows it
ZERO_PARAMS_FLOOR = 1e-3  # millions: where 0-parameter rows go when no row has a non-zero count


# ---------------------------------------------------------------- shared helpers


def _check_path(path: str | Path) -> Path:
    """The output path, once its suffix names a supported format."""
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise PeftbenchError(f"cannot write a plot to '{path}': the suffix must be one of {', '.join(FORMATS)}")
    return path


def _check_columns(board: Leaderboard, *columns: str) -> None:
    if board.is_empty:
        raise PeftbenchError(f"nothing to plot: the {board.suite.name} leaderboard has no rows")
    for column in columns:
        if column not in board.table.columns:
            numeric = [c for c in board.table.columns if c not in ("Seeds", "Protocol")]
            raise PeftbenchError(
                f"no column '{column}' in the {board.suite.name} leaderboard; "
                f"valid columns: {', '.join(map(str, numeric))}"
            )


def _plain(text: object) -> str:
    """Text that matplotlib shows literally (a `$` would otherwise start mathtext)."""
    return str(text).replace("$", r"\$")


def _new_figure(figsize: tuple[float, float] = FIGSIZE) -> Figure:
    from matplotlib.figure import Figure  # lazy: matplotlib is slow to import

    return Figure(figsize=figsize)


def _save(fig: Figure, path: Path) -> None:
    """Write `fig` as PNG (at DPI) or SVG (text kept as text), trimmed to what is drawn."""
    from matplotlib import rc_context

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    with rc_context({"svg.fonttype": "none"}):
        fig.savefig(path, format=path.suffix.lower()[1:], dpi=DPI, bbox_inches="tight")


def _spread(board: Leaderboard, label: str, column: str) -> float:
    """The standard deviation over seeds of one cell, NaN where there is none."""
    if board.spread.empty or column not in board.spread.columns or label not in board.spread.index:
        return float("nan")
    return float(board.spread.at[label, column])


def _row_colours(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _mean_label(mean_column: str) -> str:
    return f"{mean_column} top-1 (%)"


# ---------------------------------------------------------------- Pareto plot


def pareto_front(points: Mapping[str, tuple[float, float]]) -> list[str]:
    """Labels of the points (x = cost, y = score) that no other point beats at the same or lower cost,
    ordered by cost."""
    ordered = sorted(points, key=lambda k: (points[k][0], -points[k][1]))
    front, best = [], -math.inf
    for label in ordered:
        if points[label][1] > best:
            front.append(label)
            best = points[label][1]
    return front


def _params_label(params_column: str) -> str:
    if params_column == PARAMS_WITHOUT_HEAD:
        return "Trainable parameters (M), head excluded"
    if params_column == PARAMS_WITH_HEAD:
        return "Trainable parameters (M), head included"
    return params_column


def _zero_floor(params: pd.Series) -> float:
    """Where rows with no trainable parameters sit on the log axis: a decade below the smallest
    non-zero count, or ZERO_PARAMS_FLOOR when no row has one."""
    positive = params[params > 0]
    if positive.empty:
        return ZERO_PARAMS_FLOOR
    return 10.0 ** (math.floor(math.log10(positive.min())) - 1)


def _plottable(board: Leaderboard, x: pd.Series, mean_column: str, what: str) -> pd.DataFrame:
    """Columns `x` and `mean` for the rows that have both; PeftbenchError when none has."""
    data = pd.DataFrame({"x": x, "mean": board.table[mean_column]}).astype(float).dropna()
    if data.empty:
        raise PeftbenchError(
            f"nothing to plot: no row of the {board.suite.name} leaderboard has both "
            f"'{mean_column}' and {what} (a row needs every task finished)"
        )
    return data


def _draw_points(
    ax: Axes,
    board: Leaderboard,
    xs: pd.Series,
    ys: pd.Series,
    mean_column: str,
    labels: Mapping[str, str],
    hollow: Collection[str] = (),
) -> None:
    """One coloured, annotated point per row, with ± spread over seeds as a vertical error bar."""
    for colour, label in zip(_row_colours(len(xs)), xs.index):
        std = _spread(board, label, mean_column)
        ax.errorbar(
            xs[label],
            ys[label],
            yerr=None if math.isnan(std) else std,
            fmt="o",
            color=colour,
            markerfacecolor="white" if label in hollow else colour,
            markersize=7,
            capsize=3,
            zorder=3,
        )
        ax.annotate(
            _plain(labels.get(label, label)),
            (xs[label], ys[label]),
            xytext=(5, 5),
            textcoords="offset points",
            fontsize=8,
        )


def pareto_plot(
    board: Leaderboard, path: str | Path, params_column: str = PARAMS_WITHOUT_HEAD, mean_column: str = FLAT_MEAN
) -> None:
    """Write the mean-vs-trainable-parameters figure of `board` to `path` (.png or .svg).

    Rows without `mean_column` or `params_column` (a task not finished) are left out; rows with 0
    parameters are drawn hollow at the floor `_zero_floor` gives and labelled "(0 params)".
    """
    path = _check_path(path)
    _check_columns(board, params_column, mean_column)
    data = _plottable(board, board.table[params_column], mean_column, f"'{params_column}'")
    params, means = data["x"], data["mean"]
    zero = set(params.index[params <= 0])
    xs = params.where(params > 0, _zero_floor(params))
    labels = {label: f"{label} (0 params)" for label in zero}

    fig = _new_figure()
    ax = fig.add_subplot()
    ax.set_xscale("log")
    front = pareto_front({label: (params[label], means[label]) for label in data.index})
    if len(front) > 1:
        ax.step(
            xs[front],
            means[front],
            where="post",
            linestyle="--",
            color="grey",
            linewidth=1,
            label="Pareto front",
            zorder=2,
        )
        ax.legend(loc="lower right", fontsize=8, frameon=False)
    _draw_points(ax, board, xs, means, mean_column, labels, hollow=zero)
    ax.set_xlabel(_params_label(params_column))
    ax.set_ylabel(_mean_label(mean_column))
    ax.set_title(_plain(board.suite.name))
    ax.grid(True, which="major", alpha=0.3)
    ax.margins(x=0.15, y=0.1)
    _save(fig, path)


# ---------------------------------------------------------------- accuracy vs training time


def _time_unit(longest_seconds: float) -> tuple[float, str]:
    """A divisor and unit name that keep the time axis readable."""
    if longest_seconds >= 3 * 3600:
        return 3600.0, "h"
    if longest_seconds >= 180:
        return 60.0, "min"
    return 1.0, "s"


def _check_times(board: Leaderboard, seconds_by_row: Mapping[str, float]) -> pd.Series:
    """The times as a Series over known rows; unknown rows and negative times are errors."""
    unknown = [label for label in seconds_by_row if label not in board.table.index]
    if unknown:
        raise PeftbenchError(
            f"no row {', '.join(map(repr, unknown))} in the {board.suite.name} leaderboard; "
            f"valid rows: {', '.join(map(str, board.table.index))}"
        )
    times = pd.Series(seconds_by_row, dtype=float)
    negative = times[times < 0]
    if not negative.empty:
        raise PeftbenchError(f"negative training time for {', '.join(map(repr, negative.index))}")
    return times


def accuracy_vs_time_plot(
    board: Leaderboard, seconds_by_row: Mapping[str, float], path: str | Path, mean_column: str = FLAT_MEAN
) -> None:
    """Write `mean_column` (y) against training time (x, linear from 0) to `path` (.png or .svg).

    `seconds_by_row` maps row labels of `board.table` to the training time the caller measured for
    that row (e.g. summed over the suite's tasks and averaged over seeds); rows absent from it or
    without a mean are left out. The unit (s, min, h) follows the longest time.
    """
    path = _check_path(path)
    _check_columns(board, mean_column)
    times = _check_times(board, seconds_by_row)
    data = _plottable(board, times.reindex(board.table.index), mean_column, "a training time")
    divisor, unit = _time_unit(data["x"].max())

    fig = _new_figure()
    ax = fig.add_subplot()
    _draw_points(ax, board, data["x"] / divisor, data["mean"], mean_column, {})
    ax.set_xlim(left=0, right=data["x"].max() / divisor * 1.2 or 1.0)
    ax.set_xlabel(f"Training time ({unit})")
    ax.set_ylabel(_mean_label(mean_column))
    ax.set_title(_plain(board.suite.name))
    ax.grid(True, alpha=0.3)
    ax.margins(y=0.1)
    _save(fig, path)


# ---------------------------------------------------------------- delta heatmap


def _grouped_columns(board: Leaderboard) -> tuple[list[str], list[tuple[str, int, int]]]:
    """Task names in suite-group order, then the flat mean; and (group, first, last) column spans."""
    columns, spans = [], []
    for group in board.suite.groups:
        members = [t.name for t in board.suite.tasks if t.group == group]
        if members:
            spans.append((group, len(columns), len(columns) + len(members) - 1))
            columns += members
    if FLAT_MEAN in board.table.columns:
        columns.append(FLAT_MEAN)
    return columns, spans


def deltas(board: Leaderboard, baseline_row: str) -> pd.DataFrame:
    """Top-1 of every other row minus the baseline's, per task (grouped) and for the flat mean."""
    if baseline_row not in board.table.index:
        raise PeftbenchError(
            f"unknown baseline row '{baseline_row}'; valid rows: {', '.join(map(str, board.table.index))}"
        )
    if len(board.table.index) < 2:
        raise PeftbenchError(
            f"nothing to compare: '{baseline_row}' is the only row of the {board.suite.name} leaderboard"
        )
    columns, _ = _grouped_columns(board)
    values = board.table.reindex(columns=columns).astype(float)
    return values.drop(index=baseline_row) - values.loc[baseline_row]


def _draw_groups(ax: Axes, spans: list[tuple[str, int, int]], n_rows: int) -> None:
    """Group names above the columns and a line after each group."""
    for group, first, last in spans:
        ax.text(
            (first + last) / 2,
            1.02,
            group.capitalize(),
            transform=ax.get_xaxis_transform(),
            ha="center",
            va="bottom",
            fontsize=9,
            fontweight="bold",
        )
        ax.axvline(last + 0.5, color="black", linewidth=1.5)
    ax.set_ylim(n_rows - 0.5, -0.5)


def _annotate_cells(ax: Axes, values: np.ndarray, vmax: float) -> None:
    """Each number with one decimal and its sign, white on dark cells; NaN cells stay blank."""
    fontsize = 8 if values.shape[1] <= 12 else 6
    for (i, j), value in np.ndenumerate(values):
        if not np.isnan(value):
            ax.text(
                j,
                i,
                f"{value:+.1f}",
                ha="center",
                va="center",
                fontsize=fontsize,
                color="white" if abs(value) > 0.6 * vmax else "black",
            )


def delta_heatmap(board: Leaderboard, baseline_row: str, path: str | Path) -> None:
    """Write the per-task top-1 change of every row against `baseline_row` to `path` (.png or .svg)."""
    from matplotlib import colormaps
    from matplotlib.colors import Normalize

    path = _check_path(path)
    _check_columns(board)
    diff = deltas(board, baseline_row)
    _, spans = _grouped_columns(board)
    values = diff.to_numpy()
    finite = np.abs(values[~np.isnan(values)])
    vmax = float(finite.max()) if finite.size and finite.max() > 0 else 1.0

    n_rows, n_cols = values.shape
    fig = _new_figure((max(6.0, 0.65 * n_cols + 3.0), max(2.8, 0.45 * n_rows + 2.0)))
    ax = fig.add_subplot()
    cmap = colormaps["RdBu"].with_extremes(bad="lightgrey")
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, norm=Normalize(-vmax, vmax), aspect="auto")
    _annotate_cells(ax, values, vmax)
    _draw_groups(ax, spans, n_rows)
    ax.set_xticks(
        range(n_cols),
        [_plain(c) for c in diff.columns],
        rotation=45 if n_cols > 6 else 0,
        ha="right" if n_cols > 6 else "center",
        fontsize=8,
    )
    ax.set_yticks(range(n_rows), [_plain(r) for r in diff.index], fontsize=8)
    ax.tick_params(length=0)
    fig.colorbar(image, ax=ax, label=f"Δ top-1 vs {_plain(baseline_row)} (points)", shrink=0.9)
    ax.set_title(f"{_plain(board.suite.name)}: top-1 change against {_plain(baseline_row)}", pad=20)
    _save(fig, path)


@dataclass(frozen=True)
class CriticalDifference:
    """Friedman's test over the rows' per-task top-1, then the Nemenyi critical difference (Demšar 2006)."""

    average_ranks: dict[str, float]  # row -> mean rank over tasks (1 = best)
    friedman_p: float
    critical_difference: float  # at `alpha`: rows whose mean ranks differ by less are not told apart
    alpha: float


def critical_difference(board: Leaderboard, alpha: float = 0.05) -> CriticalDifference:
    """Ranks of every row with a number on every task (ties share their mean rank), Friedman's
    chi-square test (`scipy.stats.friedmanchisquare`) and Nemenyi's CD = q_α sqrt(k (k + 1) / (6 N)),
    q_α the studentized range quantile over sqrt 2 (`scipy.stats.studentized_range`)."""
    from scipy import stats

    tasks = [t.name for t in board.suite.tasks if t.name in board.table.columns]
    scores = board.table.loc[list(board.row_runs), tasks].dropna()
    if len(scores) < 3 or len(tasks) < 2:
        raise PeftbenchError(f"a critical-difference diagram needs 3 or more rows with a number on each of 2 or more "
                             f"tasks; {board.suite.name} has {len(scores)} such rows on {len(tasks)} tasks")  # fmt: skip
    ranks = scores.rank(axis=0, ascending=False, method="average")
    friedman = stats.friedmanchisquare(*scores.to_numpy())
    k, n = len(scores), len(tasks)
    q = stats.studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2)
    cd = q * math.sqrt(k * (k + 1) / (6 * n))
    return CriticalDifference(ranks.mean(axis=1).sort_values().to_dict(), float(friedman.pvalue), float(cd), alpha)


def cd_diagram(board: Leaderboard, path: str | Path, alpha: float = 0.05) -> CriticalDifference:
    """Write the critical-difference diagram (mean ranks on an axis, the CD bar, and a thick line
    joining each maximal group of rows within one CD of each other) to `path`; return its figures."""
    path = _check_path(path)
    result = critical_difference(board, alpha)
    names, ranks = list(result.average_ranks), list(result.average_ranks.values())
    k = len(names)
    fig = _new_figure((7.0, 1.2 + 0.16 * k))
    ax = fig.add_subplot()
    ax.set_xlim(k + 0.5, 0.5)  # rank 1 (best) on the right, as Demšar draws it
    ax.set_ylim(-(1.3 + ((k + 1) // 2) * 0.55), 1.6)
    ax.axis("off")
    ax.hlines(0, 1, k, color="black", linewidth=1)
    for r in range(1, k + 1):
        ax.vlines(r, 0, 0.15, color="black", linewidth=1)
        ax.text(r, 0.3, str(r), ha="center", fontsize=8)
    for i, (name, rank) in enumerate(zip(names, ranks)):
        left = i >= (k + 1) // 2  # the better half labelled on the right, the rest on the left
        y = -(1 + (k - 1 - i if left else i) * 0.55)
        edge = k + 0.4 if left else 0.6
        ax.plot([rank, rank, edge], [0, y, y], color="black", linewidth=0.8)
        ax.text(edge, y, f" {_plain(name)} ({rank:.2f}) ", ha="right" if left else "left", va="center", fontsize=8)
    ax.hlines(1.1, 1, 1 + result.critical_difference, color="black", linewidth=2)
    ax.text(1 + result.critical_difference / 2, 1.25, f"CD = {result.critical_difference:.2f}", ha="center", fontsize=8)
    depth = 0
    for start in range(k):  # maximal cliques: rows within one CD of the first of them
        end = max(j for j in range(start, k) if ranks[j] - ranks[start] < result.critical_difference)
        if end > start and (start == 0 or ranks[end] - ranks[start - 1] >= result.critical_difference):
            depth += 1
            ax.hlines(-0.25 * depth, ranks[start] - 0.05, ranks[end] + 0.05, color="black", linewidth=3)
    ax.set_title(f"{_plain(board.suite.name)}: mean ranks over {len(board.suite.tasks)} tasks (Friedman p = "
                 f"{result.friedman_p:.3g}; Nemenyi, α = {alpha:g})", fontsize=9)  # fmt: skip
    _save(fig, path)
    return result
