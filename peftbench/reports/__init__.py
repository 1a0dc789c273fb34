"""Reports from records alone: leaderboards, their renderings, plots and published rows.

Nothing here imports torch or the sweep modules: a report runs on a laptop with only the records.
"""

from .leaderboard import Leaderboard, build_leaderboard, runs_frame, suite_means
from .render import FORMATS, render

__all__ = ["FORMATS", "Leaderboard", "build_leaderboard", "render", "runs_frame", "suite_means"]
