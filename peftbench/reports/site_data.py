"""What the site's pages are built from: the method cards, the leaderboards with their intervals
and plots, and the records."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from ..record import Record
from ..suites import get_suite
from .faithfulness import FaithfulnessRow
from .html_parts import slug
from .leaderboard import Leaderboard
from .render import formatted


@dataclass(frozen=True)
class MethodCard:
    """What the site shows of a registered method (from `peftbench.listing.method_facts`)."""

    name: str
    summary: str = ""
    doc: str = ""
    families: tuple[str, ...] = ()
    mergeable: bool = False
    options: tuple[tuple[str, str, str, str], ...] = ()  # name, kind, default, help
    train_defaults: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Interval:
    low: float
    high: float
    examples: int  # test examples (seeds averaged per example)


@dataclass
class Board:
    """One leaderboard of the site: a suite under one protocol on one backbone (model and weights)."""

    suite: str
    protocol: str
    model: str
    weights: str
    leaderboard: Leaderboard
    intervals: dict[tuple[str, str], Interval | None] = field(default_factory=dict)  # (row, task)
    plots: dict[str, str] = field(default_factory=dict)  # caption -> path under the site
    plot_notes: list[str] = field(default_factory=list)  # why a plot is absent

    @cached_property
    def shown(self):
        """The leaderboard as display strings (`render.formatted`), computed once for every page."""
        return formatted(self.leaderboard)

    @property
    def slug(self) -> str:
        return slug(self.suite, self.protocol, self.model, self.weights)

    @property
    def title(self) -> str:
        return f"{self.suite} · protocol {self.protocol} · {self.model} (weights {self.weights[:16]})"


@dataclass
class SiteData:
    boards: list[Board]
    cards: dict[str, MethodCard]
    faithfulness: dict[str, list[FaithfulnessRow]] | None
    records: list[Record]
    by_key: dict[str, Record]

    def tasks(self) -> list[tuple[str, str]]:
        """(suite, task) of every task a leaderboard has a result on, in suite order."""
        seen = []
        for board in self.boards:
            present = {task for _, task in board.leaderboard.cell_keys}
            seen += [(board.suite, t.name) for t in get_suite(board.suite).tasks if t.name in present]
        return list(dict.fromkeys(seen))
