"""Every rendering of a leaderboard: Markdown, CSV, JSON, LaTeX (booktabs) and HTML.

Cells with several seeds read `mean ± std`; the best value of each accuracy column is bold (ties:
all of them). LaTeX and HTML follow the papers' layout: task columns under their group (Natural /
Specialized / Structured for VTAB-1k), the means under "Means"; the notes and the provenance
lines follow the table.
"""

from __future__ import annotations

import html
import json
from typing import Any

import pandas as pd

from .leaderboard import FLAT_MEAN, GROUP_MEAN, MISSING, Leaderboard, group_column

LATEX_SPECIALS = {
    "▲": r"$\uparrow$",  # report --significance marks
    "▼": r"$\downarrow$",
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def accuracy_columns(board: Leaderboard) -> list[str]:
    """The columns where higher is better: tasks, group means and the two suite means."""
    names = [t.name for t in board.suite.tasks] + [group_column(g) for g in board.suite.groups]
    return [c for c in board.table.columns if c in names or c in (FLAT_MEAN, GROUP_MEAN)]


def best_cells(board: Leaderboard) -> set[tuple[str, str]]:
    """(row, column) of the highest value in each accuracy column (every row sharing it)."""
    best = set()
    for column in accuracy_columns(board):
        values = board.table[column].astype(float)
        if values.notna().any() and len(values) > 1:
            best |= {(label, column) for label in values.index[values == values.max()]}
    return best


def column_groups(board: Leaderboard) -> list[tuple[str, list[str]]]:
    """Consecutive (group title, columns) spans over the table's columns."""
    group_of = {t.name: t.group.capitalize() for t in board.suite.tasks}
    means = set(accuracy_columns(board)) - set(group_of)
    spans: list[tuple[str, list[str]]] = []
    for column in board.table.columns:
        title = group_of.get(column) or ("Means" if column in means else "")
        if spans and spans[-1][0] == title:
            spans[-1][1].append(column)
        else:
            spans.append((title, [column]))
    return spans


def latex_escape(text: str) -> str:
    return "".join(LATEX_SPECIALS.get(ch, ch) for ch in str(text)).replace("±", r"$\pm$")


EFFICIENCY_TITLE = "Efficiency (measured on the device named; inference on merged weights where the method folds)"


def render_latex(board: Leaderboard, provenance: list[str]) -> str:
    """A booktabs `table*` with group headers, bold best values and the notes as its caption."""
    shown, best = formatted(board), best_cells(board)
    columns = list(shown.columns)
    lines = [
        r"% needs \usepackage{booktabs,graphicx}",
        r"\begin{table*}[t]",
        r"\centering",
        r"\resizebox{\textwidth}{!}{%",
        r"\begin{tabular}{l" + "r" * len(columns) + "}",
        r"\toprule",
    ]
    spans, position, rules = column_groups(board), 2, []
    header = [""]
    for title, members in spans:
        header.append(
            rf"\multicolumn{{{len(members)}}}{{c}}{{{latex_escape(title)}}}"
            if title
            else " & ".join([""] * len(members))
        )
        if title:
            rules.append(rf"\cmidrule(lr){{{position}-{position + len(members) - 1}}}")
        position += len(members)
    lines += [
        " & ".join(header) + r" \\",
        " ".join(rules),
        " & ".join(["Method"] + [latex_escape(c) for c in columns]) + r" \\",
        r"\midrule",
    ]
    for label, row in shown.iterrows():
        cells = [latex_escape(label)]
        for column in columns:
            text = latex_escape(row[column]).replace(MISSING, "--")
            cells.append(rf"\textbf{{{text}}}" if (label, column) in best else text)
        lines.append(" & ".join(cells) + r" \\")
    caption = " ".join(board.notes).replace(MISSING, "--")
    lines += [
        r"\bottomrule",
        r"\end{tabular}}",
        rf"\caption{{{latex_escape(board.suite.description)}. {latex_escape(caption)}}}",
        r"\end{table*}",
    ]
    if not board.efficiency.empty:
        lines += _latex_efficiency(board)
    lines += [f"% {line}" for line in provenance]
    return "\n".join(lines) + "\n"


def _latex_efficiency(board: Leaderboard) -> list[str]:
    """The efficiency table as a second booktabs table."""
    shown = efficiency_strings(board.efficiency)
    lines = [r"\begin{table*}[t]", r"\centering", r"\begin{tabular}{l" + "r" * len(shown.columns) + "}", r"\toprule"]
    lines.append(" & ".join(["Method"] + [latex_escape(c) for c in shown.columns]) + r" \\")
    lines.append(r"\midrule")
    for label, row in shown.iterrows():
        cells = [latex_escape(label)] + [latex_escape(v).replace(MISSING, "--") for v in row]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{latex_escape(EFFICIENCY_TITLE)}.}}", r"\end{table*}"]
    return lines


def _html_efficiency(board: Leaderboard) -> str:
    if board.efficiency.empty:
        return ""
    esc, shown = html.escape, efficiency_strings(board.efficiency)
    head = "<tr><th>Method</th>" + "".join(f"<th>{esc(c)}</th>" for c in shown.columns) + "</tr>"
    body = "\n".join(
        f"<tr><th>{esc(str(label))}</th>" + "".join(f"<td>{esc(v)}</td>" for v in row) + "</tr>"
        for label, row in shown.iterrows()
    )
    return (
        f'<table class="efficiency">\n<caption>{esc(EFFICIENCY_TITLE)}</caption>\n<thead>\n{head}\n</thead>\n'
        f"<tbody>\n{body}\n</tbody>\n</table>\n"
    )


def render_html(board: Leaderboard, provenance: list[str]) -> str:
    """A standalone HTML table (two header rows), bold best values, notes and provenance below."""
    shown, best = formatted(board), best_cells(board)
    esc = html.escape
    group_row = "".join(f'<th colspan="{len(m)}">{esc(t)}</th>' for t, m in column_groups(board))
    head = (
        "<tr><th></th>"
        + group_row
        + "</tr>\n<tr><th>Method</th>"
        + "".join(f"<th>{esc(c)}</th>" for c in shown.columns)
        + "</tr>"
    )
    body = []
    for label, row in shown.iterrows():
        cells = "".join(
            f"<td><strong>{esc(row[c])}</strong></td>" if (label, c) in best else f"<td>{esc(row[c])}</td>"
            for c in shown.columns
        )
        body.append(f"<tr><th>{esc(str(label))}</th>{cells}</tr>")
    notes = "".join(f"<li>{esc(n)}</li>" for n in board.notes)
    footer = "".join(f"<li>{esc(line)}</li>" for line in provenance)
    return (
        f'<section class="peftbench-leaderboard">\n<h2>{esc(board.suite.name)}: {esc(board.suite.description)}</h2>\n'
        f"<table>\n<thead>\n{head}\n</thead>\n<tbody>\n" + "\n".join(body) + "\n</tbody>\n</table>\n"
        f'<ul class="notes">{notes}</ul>\n'
        + _html_efficiency(board)
        + f"<footer><ul>{footer}</ul></footer>\n</section>\n"
    )


def bold_markdown(board: Leaderboard, shown: pd.DataFrame) -> pd.DataFrame:
    """`shown` with the best accuracy cells wrapped in `**`."""
    out = shown.copy()
    rows, columns = list(board.table.index), list(board.table.columns)  # by position: `shown` may be escaped
    for label, column in best_cells(board):
        cell = (rows.index(label), columns.index(column))
        out.iat[cell] = f"**{out.iat[cell]}**"
    return out


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
    if not board.spread.empty:
        for label in shown.index:
            for column, std in board.spread.loc[label].items():
                if not pd.isna(std) and not pd.isna(board.table.at[label, column]):
                    shown.at[label, column] = f"{shown.at[label, column]} ± {std:.1f}"
    for (label, column), mark in board.marks.items():  # report --significance
        shown.at[label, column] = f"{shown.at[label, column]} {mark}"
    return shown


FORMATS = ("md", "csv", "json", "latex", "html")


def render(board: Leaderboard, fmt: str) -> str:
    """The leaderboard as Markdown, CSV, JSON, LaTeX (booktabs) or HTML."""
    if fmt == "latex":
        return render_latex(board, board.provenance)
    if fmt == "html":
        return render_html(board, board.provenance)
    if fmt == "md":
        return _render_markdown(board)
    if fmt == "csv":
        return _with_spread(board).to_csv(float_format="%.4f")
    if fmt == "json":
        rows = json.loads(_with_spread(board).reset_index().to_json(orient="records"))
        efficiency = (
            json.loads(board.efficiency.reset_index().to_json(orient="records")) if not board.efficiency.empty else []
        )
        payload = {"suite": board.suite.name, "rows": rows, "efficiency": efficiency}
        if board.marks:  # report --significance
            payload["marks"] = [{"Method": r, "column": c, "mark": m} for (r, c), m in board.marks.items()]
        return json.dumps({**payload, "notes": board.notes, "provenance": board.provenance}, indent=2) + "\n"
    raise ValueError(f"unknown format {fmt}; valid formats: {', '.join(FORMATS)}")


def _render_markdown(board: Leaderboard) -> str:
    title = f"## {board.suite.name}: {board.suite.description}\n\n"
    if board.is_empty:
        return title + "\n".join(f"- {note}" for note in board.notes) + "\n"
    shown = bold_markdown(board, markdown_safe(formatted(board)))
    parts = [
        title + shown.to_markdown(colalign=("left",) + ("right",) * len(shown.columns), disable_numparse=True),
        "\n".join(f"- {note}" for note in board.notes + ["Bold: the best value of each accuracy column."]),
    ]
    if not board.efficiency.empty:
        parts.append(
            f"{EFFICIENCY_TITLE}:\n\n"
            + markdown_safe(efficiency_strings(board.efficiency)).to_markdown(disable_numparse=True)
        )
    parts.append("Provenance:\n\n" + "\n".join(f"- {line}" for line in board.provenance))
    return "\n\n".join(parts) + "\n"


MARKDOWN_SPECIALS = "\\|*`[]<>"  # what would break a table row or turn a name from a record into markup


def markdown_escape(text: str) -> str:
    return "".join(f"\\{ch}" if ch in MARKDOWN_SPECIALS else ch for ch in str(text))


def markdown_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with its row labels and text cells escaped for a Markdown table."""
    out = frame.apply(lambda column: column.map(lambda v: markdown_escape(v) if isinstance(v, str) else v))
    out.index = [markdown_escape(label) for label in frame.index]
    out.index.name = frame.index.name
    return out


def efficiency_strings(efficiency: pd.DataFrame) -> pd.DataFrame:
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
