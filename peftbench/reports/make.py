"""`peftbench report`: the records under a results folder -> leaderboards, plots, one rendered text."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..errors import PeftbenchError
from ..store import Store
from ..suites import all_suites, get_suite
from .leaderboard import TRAIN_TIME, build_leaderboard, runs_frame
from .render import render


@dataclasses.dataclass(frozen=True)
class PlotRequest:
    pareto: Path | None = None  # mean accuracy against trainable parameters
    time: Path | None = None  # mean accuracy against training time
    heatmap: Path | None = None  # per-task deltas against `baseline`
    baseline: str | None = None
    cd: Path | None = None  # critical-difference diagram of the rows across the suite's tasks

    @property
    def any(self) -> bool:
        return bool(self.pareto or self.time or self.heatmap or self.cd)


def make_report(
    results: Path,
    suite: str | None,
    fmt: str,
    reference: bool = False,
    plots: PlotRequest = PlotRequest(),
    significance: str | None = None,
) -> str:
    """The leaderboard of `suite` (every suite with records when None) in `fmt`, writing the plots asked for."""
    suites = [get_suite(suite)] if suite else list(all_suites().values())
    if not results.is_dir():
        raise PeftbenchError(f"results folder {results} does not exist; run `peftbench run` first or pass --results")
    if plots.any and len(suites) != 1:
        raise PeftbenchError("--plot, --plot-time, --heatmap and --plot-cd need one --suite")
    if plots.heatmap and not plots.baseline:
        raise PeftbenchError("--heatmap needs --baseline ROW, e.g. --baseline linear")
    runs = runs_frame(Store(results).records())
    boards = [build_leaderboard(runs, s) for s in suites]
    if not suite:
        boards = [b for b in boards if not b.is_empty]
    if not boards or boards[0].is_empty:
        raise PeftbenchError(f"no finished records under {results}" + (f" for suite {suite}" if suite else ""))
    if plots.any:
        _draw(boards[0], plots)
    if significance:
        if len(boards) != 1:
            raise PeftbenchError("--significance needs one --suite")
        from .significance import with_significance

        boards = [with_significance(boards[0], results, significance)]
    if reference:
        from .published import with_published

        boards = [with_published(b) for b in boards]
    return "\n".join(render(b, fmt) for b in boards)


def _draw(board, plots: PlotRequest) -> None:
    from . import plots as drawing

    if plots.pareto:
        drawing.pareto_plot(board, plots.pareto)
    if plots.time:
        minutes = board.efficiency[TRAIN_TIME].dropna()
        drawing.accuracy_vs_time_plot(board, (minutes * 60).to_dict(), plots.time)
    if plots.heatmap:
        drawing.delta_heatmap(board, plots.baseline, plots.heatmap)
    if plots.cd:
        drawing.cd_diagram(board, plots.cd)
