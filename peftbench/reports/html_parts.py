"""The site's HTML building blocks: escaped text, links, sortable tables and the page frame.

Every string a page shows goes through `esc` (record fields included: method labels, model names,
devices, failure reasons); hrefs are built from `slug`s, so they hold no record text unescaped.
Pages link one stylesheet and one script from `assets/`: nothing is fetched from the network.
"""

from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

ASSETS = ("site.css", "sort.js")


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def slug(*parts: str) -> str:
    """A file-name-safe, readable identifier: letters, digits, `.`, `_` and `-`."""
    return re.sub(r"[^A-Za-z0-9_.]+", "-", "-".join(parts)).strip("-.") or "page"


def code_spans(text: str) -> str:
    """Escaped Markdown text with its `backticked` spans as <code>."""
    return re.sub(r"`([^`]*)`", r"<code>\1</code>", esc(text))


@dataclass(frozen=True)
class Cell:
    text: str
    value: float | str | None = None  # what the column sorts by (default: the text)
    href: str | None = None
    strong: bool = False
    numeric: bool = True  # right-aligned

    def html(self, tag: str, column: int) -> str:
        value = self.text if self.value is None else self.value
        if isinstance(value, float) and math.isnan(value):
            value = ""
        shown = esc(self.text)
        if self.href:
            shown = f'<a href="{esc(self.href)}">{shown}</a>'
        if self.strong:
            shown = f"<strong>{shown}</strong>"
        kind = "" if self.numeric else ' class="text"'
        return f'<{tag}{kind} data-value="{esc(value)}">{shown}</{tag}>'


def table(
    headers: list[str],
    rows: list[list[Cell]],
    caption: str = "",
    groups: list[tuple[str, int]] | None = None,
    sortable: bool = True,
) -> str:
    """A table whose first column labels the rows; `groups`: (title, span) header cells above the
    column headers (the label column excluded). Sortable tables order on a click of a header."""
    head = []
    if groups:
        head.append("<tr><th></th>" + "".join(f'<th colspan="{n}">{esc(t)}</th>' for t, n in groups) + "</tr>")
    text_columns = {i for i, cell in enumerate(rows[0]) if not cell.numeric} if rows else set()

    def attributes(i: int) -> str:
        return (f' data-column="{i}"' if sortable else "") + (' class="text"' if i in text_columns else "")

    head.append("<tr>" + "".join(f"<th{attributes(i)}>{esc(h)}</th>" for i, h in enumerate(headers)) + "</tr>")
    body = [
        "<tr>" + "".join(cell.html("th" if i == 0 else "td", i) for i, cell in enumerate(row)) + "</tr>" for row in rows
    ]
    kind = ' class="sortable"' if sortable else ""
    title = f"<caption>{esc(caption)}</caption>" if caption else ""
    return (
        f'<div class="scroll"><table{kind}>{title}\n<thead>\n'
        + "\n".join(head)
        + "\n</thead>\n<tbody>\n"
        + "\n".join(body)
        + "\n</tbody>\n</table></div>\n"
    )


def bullet_list(lines: list[str], kind: str = "notes") -> str:
    return f'<ul class="{kind}">' + "".join(f"<li>{esc(line)}</li>" for line in lines) + "</ul>\n"


def facts(pairs: list[tuple[str, str]]) -> str:
    return '<dl class="facts">' + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in pairs) + "</dl>\n"


def page(title: str, body: str, depth: int = 0) -> str:
    """A whole page: the shared header (index, methods, tasks, provenance), `body`, the sort script."""
    up = "../" * depth
    nav = "".join(
        f'<a href="{up}{href}">{name}</a>'
        for name, href in (("Leaderboards", "index.html"), ("Methods", "methods/index.html"),
                           ("Tasks", "tasks/index.html"), ("Provenance", "provenance.html"))
    )  # fmt: skip
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{esc(title)} · peftbench</title>\n"
        f'<link rel="stylesheet" href="{up}assets/site.css">\n</head>\n<body>\n'
        f'<header class="site"><p><strong>peftbench</strong> {nav}</p></header>\n'
        f"<main>\n<h1>{esc(title)}</h1>\n{body}</main>\n"
        f'<script src="{up}assets/sort.js"></script>\n</body>\n</html>\n'
    )


def write_assets(out: Path) -> None:
    folder = out / "assets"
    folder.mkdir(parents=True, exist_ok=True)
    for name in ASSETS:
        (folder / name).write_text(resources.files(__package__).joinpath("site_assets", name).read_text())
