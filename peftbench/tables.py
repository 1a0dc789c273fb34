"""LaTeX (booktabs) and HTML renderings of a leaderboard, in the papers' layout.

Task columns sit under their group (Natural / Specialized / Structured for VTAB-1k), the means
under "Means"; the best value of each accuracy column is bold (ties: all of them); cells with
several seeds read `mean ± std`; the notes and the provenance lines follow the table.
"""
from __future__ import annotations

import html
from typing import Any

import pandas as pd

from .report import FLAT_MEAN, GROUP_MEAN, MISSING, Leaderboard, formatted, group_column

LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


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


def render_latex(board: Leaderboard, provenance: list[str]) -> str:
    """A booktabs `table*` with group headers, bold best values and the notes as its caption."""
    shown, best = formatted(board), best_cells(board)
    columns = list(shown.columns)
    lines = [r"% needs \usepackage{booktabs,graphicx}", r"\begin{table*}[t]", r"\centering",
             r"\resizebox{\textwidth}{!}{%", r"\begin{tabular}{l" + "r" * len(columns) + "}", r"\toprule"]
    spans, position, rules = column_groups(board), 2, []
    header = [""]
    for title, members in spans:
        header.append(rf"\multicolumn{{{len(members)}}}{{c}}{{{latex_escape(title)}}}" if title else
                      " & ".join([""] * len(members)))
        if title:
            rules.append(rf"\cmidrule(lr){{{position}-{position + len(members) - 1}}}")
        position += len(members)
    lines += [" & ".join(header) + r" \\", " ".join(rules),
              " & ".join(["Method"] + [latex_escape(c) for c in columns]) + r" \\", r"\midrule"]
    for label, row in shown.iterrows():
        cells = [latex_escape(label)]
        for column in columns:
            text = latex_escape(row[column]).replace(MISSING, "--")
            cells.append(rf"\textbf{{{text}}}" if (label, column) in best else text)
        lines.append(" & ".join(cells) + r" \\")
    caption = " ".join(board.notes).replace(MISSING, "--")
    lines += [r"\bottomrule", r"\end{tabular}}", rf"\caption{{{latex_escape(board.suite.description)}. {latex_escape(caption)}}}",
              r"\end{table*}"]
    lines += [f"% {line}" for line in provenance]
    return "\n".join(lines) + "\n"


def render_html(board: Leaderboard, provenance: list[str]) -> str:
    """A standalone HTML table (two header rows), bold best values, notes and provenance below."""
    shown, best = formatted(board), best_cells(board)
    esc = html.escape
    group_row = "".join(f'<th colspan="{len(m)}">{esc(t)}</th>' for t, m in column_groups(board))
    head = "<tr><th></th>" + group_row + "</tr>\n<tr><th>Method</th>" + "".join(f"<th>{esc(c)}</th>" for c in shown.columns) + "</tr>"
    body = []
    for label, row in shown.iterrows():
        cells = "".join(f"<td><strong>{esc(row[c])}</strong></td>" if (label, c) in best else f"<td>{esc(row[c])}</td>"
                        for c in shown.columns)
        body.append(f"<tr><th>{esc(str(label))}</th>{cells}</tr>")
    notes = "".join(f"<li>{esc(n)}</li>" for n in board.notes)
    footer = "".join(f"<li>{esc(line)}</li>" for line in provenance)
    return (f"<section class=\"peftbench-leaderboard\">\n<h2>{esc(board.suite.name)}: {esc(board.suite.description)}</h2>\n"
            f"<table>\n<thead>\n{head}\n</thead>\n<tbody>\n" + "\n".join(body) + "\n</tbody>\n</table>\n"
            f"<ul class=\"notes\">{notes}</ul>\n<footer><ul>{footer}</ul></footer>\n</section>\n")


def bold_markdown(board: Leaderboard, shown: pd.DataFrame) -> pd.DataFrame:
    """`shown` with the best accuracy cells wrapped in `**`."""
    out = shown.copy()
    for label, column in best_cells(board):
        out.at[label, column] = f"**{out.at[label, column]}**"
    return out


