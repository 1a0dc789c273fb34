"""`peftbench site --out site/`: a static leaderboard site built from the records under a results folder.

- `index.html`: one sortable leaderboard per suite × protocol × backbone (the `report` table: both
  means, both parameter counts, seeds, efficiency, provenance), with its plots (SVG): accuracy
  against trainable parameters and, with 3 or more complete rows, the critical-difference diagram.
- `methods/<method>.html`: summary, the cited docstring (paper, equations, init, trainable set),
  options, families, its row of FAITHFULNESS.md, and per leaderboard its per-task results: top-1,
  seeds, the 95 % interval over the test examples and the trainable counts.
- `tasks/<suite>-<task>.html`: the task's facts and every row's result on it.
- `provenance.html`: every record (failed ones with their reason): versions, commit, device, data
  fingerprints and the hash of the kept predictions.

Intervals: per example, its correctness averaged over the cell's seeds; the 95 % percentile bootstrap
of their mean over the test examples (`scipy.stats.bootstrap`, `RESAMPLES` resamples, seeded), so
seeds narrow the interval only as far as they change the predictions. Plain HTML, one stylesheet,
one short script (column sorting); nothing is fetched at view time; every record string is escaped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

from ..errors import PeftbenchError
from ..record import Record
from ..store import Store
from ..suites import get_suite
from .faithfulness import FaithfulnessRow
from .html_parts import slug, write_assets
from .leaderboard import build_leaderboard, runs_frame
from .site_data import Board, Interval, MethodCard, SiteData

RESAMPLES = 2000
CONFIDENCE = 0.95


def build_boards(records: list[Record]) -> list[Board]:
    """The leaderboards of the records, one per (suite, protocol, model, weights), in a stable order."""
    runs = runs_frame(records)
    if runs.empty:
        return []
    boards = []
    for (suite, protocol, model, weights), part in runs.groupby(["suite", "protocol", "model", "weights"]):
        boards.append(Board(suite, protocol, model, weights, build_leaderboard(part, get_suite(suite))))
    return boards


def accuracy_interval(store: Store, records: Iterable[Record], rng: np.random.Generator) -> Interval | None:
    """The 95 % bootstrap interval of a cell's top-1 (None when a record keeps no predictions)."""
    from scipy import stats

    correct = []
    for record in records:
        if record.predictions is None or not record.predictions.file:
            return None
        predicted, labels = store.predictions(record)
        correct.append(predicted == labels)
    if len({len(c) for c in correct}) != 1:
        return None  # seeds evaluated on different test sets: no per-example average
    per_example = 100 * np.mean(correct, axis=0)
    if np.ptp(per_example) == 0:  # every resample equal: scipy would warn of a degenerate distribution
        return Interval(float(per_example[0]), float(per_example[0]), len(per_example))
    result = stats.bootstrap((per_example,), np.mean, n_resamples=RESAMPLES, confidence_level=CONFIDENCE,
                             method="percentile", rng=rng, vectorized=True, batch=200)  # fmt: skip
    ci = result.confidence_interval
    return Interval(float(ci.low), float(ci.high), len(per_example))


def _add_intervals(board: Board, store: Store, by_key: dict[str, Record]) -> None:
    rng = np.random.default_rng(0)
    for (label, task), keys in sorted(board.leaderboard.cell_keys.items()):
        board.intervals[(label, task)] = accuracy_interval(store, [by_key[k] for k in keys], rng)


def _add_plots(board: Board, out: Path) -> None:
    from . import plots

    folder = out / "plots"
    folder.mkdir(parents=True, exist_ok=True)
    drawings = (
        ("Mean top-1 against trainable parameters", "pareto", plots.pareto_plot),
        ("Critical-difference diagram (Friedman, then Nemenyi)", "cd", plots.cd_diagram),
    )
    for caption, name, draw in drawings:
        path = folder / f"{board.slug}-{name}.svg"
        try:
            draw(board.leaderboard, path)
        except PeftbenchError as exc:
            board.plot_notes.append(f"{caption}: not drawn, {exc}")
            continue
        board.plots[caption] = f"plots/{path.name}"


def build_site(
    results: Path,
    out: Path,
    cards: Iterable[MethodCard] = (),
    faithfulness: dict[str, list[FaithfulnessRow]] | None = None,
) -> list[Path]:
    """Write the site for the records under `results` into `out`; return the pages written."""
    from . import site_pages as pages

    if not results.is_dir():
        raise PeftbenchError(f"results folder {results} does not exist; run `peftbench run` first or pass --results")
    store = Store(results)
    records = list(store.records())
    boards = build_boards(records)
    if not boards:
        raise PeftbenchError(f"no finished records under {results}; a site needs at least one")
    by_key = {r.key: r for r in records}
    out.mkdir(parents=True, exist_ok=True)
    write_assets(out)
    for board in boards:
        _add_intervals(board, store, by_key)
        _add_plots(board, out)
    cards = {c.name: c for c in cards}
    for board in boards:  # methods that left the registry keep their page
        for run in board.leaderboard.row_runs.values():
            cards.setdefault(run["method_name"], MethodCard(run["method_name"], "not a registered method here"))
    site = SiteData(boards, dict(sorted(cards.items())), faithfulness, records, by_key)
    written = {out / "index.html": pages.index_page(site), out / "provenance.html": pages.provenance_page(site)}
    written[out / "methods" / "index.html"] = pages.methods_index(site)
    for name in site.cards:
        written[out / "methods" / f"{slug(name)}.html"] = pages.method_page(site, name)
    written[out / "tasks" / "index.html"] = pages.tasks_index(site)
    for suite, task in site.tasks():
        written[out / "tasks" / f"{slug(suite, task)}.html"] = pages.task_page(site, suite, task)
    for path, text in written.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return list(written)
