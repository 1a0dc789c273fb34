"""The pages of `peftbench site`, each a function of the site's data returning one HTML document."""

from __future__ import annotations

from statistics import fmean

import pandas as pd

from ..suites import get_suite
from .faithfulness import FaithfulnessRow
from .html_parts import Cell, bullet_list, code_spans, esc, facts, page, slug, table
from .leaderboard import FLAT_MEAN, GROUP_MEAN, MISSING, group_column
from .published import PARAMS_AS_PRINTED, recomputed_means, rows_for
from .render import EFFICIENCY_TITLE, best_cells, column_groups, efficiency_strings
from .site_data import Board, SiteData

CELL_HEADERS = ["Top-1 (%)", "Seeds", "95 % interval", "Test examples", "Trainable incl. head", "Trainable excl. head"]
INTERVAL_NOTE = (
    "95 % interval: percentile bootstrap over the test examples of the top-1, each example's correctness "
    "averaged over the cell's seeds (– where a record keeps no predictions)."
)


def _method_href(board: Board, label: str, up: str) -> str:
    return f"{up}methods/{slug(board.leaderboard.row_runs[label]['method_name'])}.html"


def _number(value: float) -> str:
    return MISSING if pd.isna(value) else f"{value:,.0f}"


def _cell_results(site: SiteData, board: Board, label: str, task: str) -> list[Cell]:
    """Top-1 (± std over seeds), seeds, interval, examples and trainable counts of one leaderboard cell."""
    keys = board.leaderboard.cell_keys.get((label, task), ())
    shown = board.shown.at[label, task]
    value = board.leaderboard.table.at[label, task]
    interval = board.intervals.get((label, task))
    span = f"[{interval.low:.1f}, {interval.high:.1f}]" if interval else MISSING
    params = [site.by_key[k].params for k in keys if site.by_key[k].params]
    with_head = fmean(p.trainable for p in params) if params else float("nan")
    without_head = fmean(p.trainable_without_head for p in params) if params else float("nan")
    return [
        Cell(shown, value),
        Cell(str(len(keys)), len(keys)),
        Cell(span, interval.low if interval else None),
        Cell(_number(interval.examples) if interval else MISSING, interval.examples if interval else None),
        Cell(_number(with_head), with_head),
        Cell(_number(without_head), without_head),
    ]


def _leaderboard_table(board: Board) -> str:
    lb = board.leaderboard
    shown, best = board.shown.drop(columns=["Protocol"]), best_cells(lb)
    columns = list(shown.columns)
    rows = []
    for label in shown.index:
        cells = [Cell(label, href=_method_href(board, label, ""), numeric=False)]
        cells += [Cell(shown.at[label, c], lb.table.at[label, c], strong=(label, c) in best) for c in columns]
        rows.append(cells)
    groups = [(title, len([c for c in members if c in columns])) for title, members in column_groups(lb)]
    return table(["Method", *columns], rows, groups=[(t, n) for t, n in groups if n])


PUBLISHED_TITLE = (
    "Published rows of this backbone family (tasks/reference/): means from the cells, or from the printed group "
    "means; Params as printed. `report --reference paper` adds ours − published where backbone, variant and "
    "protocol match."
)


def _published_table(board: Board) -> str:
    """The suite's published rows of the board's backbone family (tasks/reference/), or nothing."""
    rows_shown = rows_for(board.leaderboard)
    if not rows_shown:
        return ""
    suite = get_suite(board.suite)
    groups = [group_column(g) for g in suite.groups] if len(suite.groups) > 1 else []
    columns = [*groups, FLAT_MEAN, GROUP_MEAN]
    rows = []
    for row in rows_shown:
        means = recomputed_means(row, suite)
        cells = [Cell(row.method, numeric=False), Cell(row.backbone, numeric=False)]
        cells += [Cell(MISSING if pd.isna(means[c]) else f"{means[c]:.1f}", means[c]) for c in columns]
        params = row.params_as_printed
        cells += [Cell(MISSING if pd.isna(params) else f"{params:g}", params), Cell(row.protocol, numeric=False),
                  Cell(row.source, numeric=False)]  # fmt: skip
        rows.append(cells)
    headers = ["Published", "Backbone", *columns, PARAMS_AS_PRINTED, "Protocol", "Source"]
    return table(headers, rows, caption=PUBLISHED_TITLE)


def _efficiency_table(board: Board) -> str:
    if board.leaderboard.efficiency.empty:
        return ""
    shown = efficiency_strings(board.leaderboard.efficiency)
    values = board.leaderboard.efficiency
    rows = [
        [Cell(label, numeric=False)] + [Cell(shown.at[label, c], values.at[label, c]) for c in shown.columns]
        for label in shown.index
    ]
    return table(["Method", *shown.columns], rows, caption=EFFICIENCY_TITLE)


def _plots(board: Board, up: str) -> str:
    images = "".join(
        f'<figure><img class="plot" src="{up}{esc(path)}" alt="{esc(caption)}"><figcaption>{esc(caption)}'
        "</figcaption></figure>"
        for caption, path in board.plots.items()
    )
    return images + (bullet_list(board.plot_notes) if board.plot_notes else "")


def index_page(site: SiteData) -> str:
    parts = [
        "<p>One leaderboard per suite, protocol and backbone, from the records under the results folder. "
        "Click a column header to sort by it; the notes under each table say which mean and which "
        "parameter count it shows.</p>\n<ul>"
        + "".join(f'<li><a href="#{esc(b.slug)}">{esc(b.title)}</a></li>' for b in site.boards)
        + "</ul>\n"
    ]
    for board in site.boards:
        tasks = sorted({task for _, task in board.leaderboard.cell_keys})
        links = ", ".join(f'<a href="tasks/{slug(board.suite, t)}.html">{esc(t)}</a>' for t in tasks)
        parts.append(
            f'<section id="{esc(board.slug)}">\n<h2>{esc(board.title)}</h2>\n'
            f"<p>{esc(get_suite(board.suite).description)}. Tasks: {links}.</p>\n"
            + _leaderboard_table(board)
            + bullet_list(board.leaderboard.notes + ["Bold: the best value of each accuracy column."])
            + _published_table(board)
            + _efficiency_table(board)
            + _plots(board, "")
            + "<h3>Provenance</h3>\n"
            + bullet_list(board.leaderboard.provenance, "provenance")
            + "</section>\n"
        )
    return page("Leaderboards", "".join(parts))


def methods_index(site: SiteData) -> str:
    ran = {run["method_name"] for b in site.boards for run in b.leaderboard.row_runs.values()}
    rows = [
        [Cell(name, href=f"{slug(name)}.html", numeric=False), Cell(", ".join(card.families), numeric=False),
         Cell("yes" if card.mergeable else "no", numeric=False), Cell("yes" if name in ran else "no", numeric=False),
         Cell(card.summary, numeric=False)]
        for name, card in site.cards.items()
    ]  # fmt: skip
    return page("Methods", table(["Method", "Families", "Mergeable", "Has results", "Summary"], rows), depth=1)


def _faithfulness_section(site: SiteData, name: str) -> str:
    if site.faithfulness is None:
        return "<p>No faithfulness table was given (peftbench site --faithfulness FAITHFULNESS.md).</p>\n"
    rows = site.faithfulness.get(name)
    if not rows:
        return "<p>FAITHFULNESS.md has no row for this method.</p>\n"
    return "".join(_faithfulness_row(r) for r in rows)


def _faithfulness_row(row: FaithfulnessRow) -> str:
    described = [("Rows", row.methods), ("Repository @ commit", row.repository), ("Module", row.module),
                 ("Paper recipe", row.recipe), ("Command", row.command)]  # fmt: skip
    return (
        '<dl class="facts">' + "".join(f"<dt>{esc(k)}</dt><dd>{code_spans(v)}</dd>" for k, v in described) + "</dl>\n"
    )


def method_page(site: SiteData, name: str) -> str:
    card = site.cards[name]
    parts = [f"<p>{esc(card.summary)}</p>\n"]
    defaults = ", ".join(f"{k}={v}" for k, v in card.train_defaults.items()) or "the engine's"
    parts.append(
        facts(
            [
                ("Families", ", ".join(card.families) or MISSING),
                ("Mergeable", "yes" if card.mergeable else "no"),
                ("Training defaults", defaults),
            ]
        )  # fmt: skip
    )
    if card.doc:
        parts.append(f'<h2>Paper and method</h2>\n<pre class="doc">{esc(card.doc)}</pre>\n')
    if card.options:
        rows = [
            [Cell(o, numeric=False), Cell(kind, numeric=False), Cell(default, numeric=False), Cell(text, numeric=False)]
            for o, kind, default, text in card.options
        ]
        options = table(["Option", "Type", "Default", "Help"], rows, sortable=False)
        parts.append("<h2>Options (--set name=value)</h2>\n" + options)
    parts.append("<h2>Faithfulness</h2>\n" + _faithfulness_section(site, name))
    parts.append("<h2>Results</h2>\n")
    shown_any = False
    for board in site.boards:
        for label, run in board.leaderboard.row_runs.items():
            if run["method_name"] != name:
                continue
            shown_any = True
            tasks = [t.name for t in get_suite(board.suite).tasks if (label, t.name) in board.leaderboard.cell_keys]
            rows = [
                [Cell(t, href=f"../tasks/{slug(board.suite, t)}.html", numeric=False),
                 *_cell_results(site, board, label, t)]
                for t in tasks
            ]  # fmt: skip
            means = board.shown.loc[label]
            summary = [f"{column}: {means[column]}" for column in means.index if column.startswith(("Mean", "Params"))]
            parts.append(
                f'<h3><a href="../index.html#{esc(board.slug)}">{esc(board.title)}</a>: {esc(label)}</h3>\n'
                + table(["Task", *CELL_HEADERS], rows)
                + bullet_list(summary + [INTERVAL_NOTE])
            )
    if not shown_any:
        parts.append("<p>No finished runs of this method under the results folder.</p>\n")
    return page(f"{name}", "".join(parts), depth=1)


def tasks_index(site: SiteData) -> str:
    rows = []
    for suite_name, task_name in site.tasks():
        task = next(t for t in get_suite(suite_name).tasks if t.name == task_name)
        rows.append(
            [Cell(task_name, href=f"{slug(suite_name, task_name)}.html", numeric=False),
             Cell(suite_name, numeric=False), Cell(task.group, numeric=False), Cell(str(task.num_classes), task.num_classes)]
        )  # fmt: skip
    return page("Tasks", table(["Task", "Suite", "Group", "Classes"], rows), depth=1)


def task_page(site: SiteData, suite_name: str, task_name: str) -> str:
    suite = get_suite(suite_name)
    task = next(t for t in suite.tasks if t.name == task_name)
    splits = ", ".join(f"{split} {size:,}" for split, size in task.splits.items())
    parts = [facts([("Suite", f"{suite.name}: {suite.description}"), ("Group", task.group),
                    ("Classes", str(task.num_classes)), ("Split sizes", splits), ("Source", task.source or MISSING)])]  # fmt: skip
    for board in site.boards:
        labels = [label for label in board.leaderboard.row_runs if (label, task_name) in board.leaderboard.cell_keys]
        if board.suite != suite_name or not labels:
            continue
        rows = [
            [Cell(label, href=_method_href(board, label, "../"), numeric=False),
             *_cell_results(site, board, label, task_name)]
            for label in labels
        ]  # fmt: skip
        parts.append(
            f'<h2><a href="../index.html#{esc(board.slug)}">{esc(board.title)}</a></h2>\n'
            + table(["Method", *CELL_HEADERS], rows)
        )
    parts.append(bullet_list([INTERVAL_NOTE]))
    return page(f"{suite_name} / {task_name}", "".join(parts), depth=1)


PROVENANCE_HEADERS = ["Record", "Suite", "Task", "Method", "Model", "Weights", "Protocol", "Seed", "Kind", "Status",
                      "Finished", "Device", "peftbench", "Git commit", "Data (sha256 prefixes)", "Predictions (sha256)",
                      "Reason"]  # fmt: skip


def provenance_page(site: SiteData) -> str:
    rows = []
    for r in site.records:
        fingerprints = (r.data.fingerprints if r.data else {}) or {}
        data = " ".join(sorted(f"{split}:{(fp or {}).get('sha256', '?')[:12]}" for split, fp in fingerprints.items()))
        predictions = r.predictions.sha256[:16] if r.predictions and r.predictions.sha256 else MISSING
        texts = [r.key, r.spec.suite, r.spec.task, r.spec.method, r.spec.model, r.spec.weights, r.spec.protocol,
                 str(r.spec.seed), r.kind, r.status, r.provenance.finished_at, r.provenance.device,
                 r.provenance.versions.get("peftbench", MISSING), r.provenance.git_commit or MISSING, data or MISSING,
                 predictions, r.reason]  # fmt: skip
        rows.append([Cell(text, r.spec.seed if i == 7 else None, numeric=i == 7) for i, text in enumerate(texts)])
    intro = (
        "<p>Every record under the results folder, failed runs and tune trials included (the leaderboards "
        "use finished runs and tune finals only; a cell averages the seeds of its newest settings).</p>\n"
    )
    return page("Provenance", intro + table(PROVENANCE_HEADERS, rows))
