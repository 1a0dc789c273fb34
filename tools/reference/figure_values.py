"""The values a paper plots in a vector figure, read from the figure's drawing commands in the PDF.

A figure drawn by matplotlib's PDF backend keeps every data point as a path coordinate. Each panel's axes
are calibrated on its grid lines and their tick labels, and each series is named by the legend entry
drawn in its colour, so the values come back as exactly as the figure holds them (to about 1e-5).

    pip install pypdf
    git -C PETL-ViT show e15ce8c:FacT/pdf.pdf > fact.pdf
    git -C PETL-ViT show 026e4f1:convpass/pdf.pdf > convpass.pdf
    python tools/reference/figure_values.py fact.pdf --page 6 --figure Im6
    python tools/reference/figure_values.py convpass.pdf --page 5 --figure Im5 --compare fact.pdf:6:Im6

Prints one table per panel (a series per row, a column per x tick). With --compare, every value that both
figures plot under the same panel and series name is compared (tasks/reference/SOURCES.md: FacT's Figure 6
and Convpass's Figure 5, drawn at different scales, agree on all 150 values of their five shared baselines).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field

import pypdf
from pypdf.generic import ContentStream

WHITE = (1.0, 1.0, 1.0)  # the grid lines of matplotlib's seaborn styles
Point = tuple[float, float]
Rect = tuple[float, float, float, float]


@dataclass
class Drawing:
    """A Form XObject's stroked paths (with the clip rectangle and colour they were drawn in) and texts."""

    paths: list[tuple[Rect | None, tuple[float, ...], list[Point]]] = field(default_factory=list)
    texts: list[tuple[float, float, str]] = field(default_factory=list)  # x, y of the text's origin


@dataclass
class Panel:
    title: str
    x_ticks: list[float]
    series: dict[str, list[float]]  # legend label -> value at each x tick


def drawing(pdf: str, page: int, figure: str | None = None) -> Drawing:
    """The paths and texts of XObject `figure` on 1-based `page` (None: of the page itself, as matplotlib
    writes a figure), the PDF operators interpreted."""
    reader = pypdf.PdfReader(pdf)
    sheet = reader.pages[page - 1]
    if figure is None:
        stream = sheet.get_contents()
    else:
        stream = ContentStream(sheet["/Resources"]["/XObject"].get_object()[f"/{figure}"].get_object(), reader)
    result, saved = Drawing(), []
    ctm, colour, clip, rect, path = (1.0, 0.0, 0.0, 1.0, 0.0, 0.0), (0.0,) * 3, None, None, []
    for operands, operator in stream.operations:
        op, values = operator.decode(), [float(v) for v in operands if isinstance(v, (int, float))]
        if op == "q":
            saved.append((ctm, colour, clip))
        elif op == "Q":
            ctm, colour, clip = saved.pop()
        elif op == "cm":
            ctm = _concat(tuple(values), ctm)
        elif op == "RG":
            colour = tuple(round(v, 4) for v in values)
        elif op == "G":
            colour = (round(values[0], 4),) * 3
        elif op == "re":
            rect, path = tuple(values), []
        elif op == "W":
            clip = rect
        elif op == "m":
            path = [tuple(values)]
        elif op == "l":
            path.append(tuple(values))
        elif op == "S":
            result.paths.append((clip, colour, path))
            path = []
        elif op in ("n", "f", "B", "b", "f*", "B*"):
            path = []
        elif op == "TJ":
            result.texts.append((ctm[4], ctm[5], "".join(p for p in operands[0] if isinstance(p, str))))
    return result


def _concat(m: tuple[float, ...], ctm: tuple[float, ...]) -> tuple[float, ...]:
    """`m` applied before `ctm` (the PDF `cm` operator)."""
    a, b, c, d, e, f = m
    A, B, C, D, E, F = ctm
    return (a * A + b * C, a * B + b * D, c * A + d * C, c * B + d * D, e * A + f * C + E, e * B + f * D + F)


def panels(figure: Drawing) -> list[Panel]:
    """Every axes of the figure (a clip rectangle holding data paths), calibrated and labelled."""
    clips = sorted({clip for clip, _, _ in figure.paths if clip is not None})
    legend = [(colour, path) for clip, colour, path in figure.paths if clip is None and colour != WHITE]
    return [_panel(clip, figure, legend) for clip in clips]


def _panel(clip: Rect, figure: Drawing, legend: list) -> Panel:
    x0, y0, width, height = clip
    texts = [t for t in figure.texts if x0 - 60 <= t[0] <= x0 + width and y0 - 40 <= t[1] <= y0 + height + 20]
    grid = [path for c, colour, path in figure.paths if c == clip and colour == WHITE]
    left = [t for t in texts if t[0] < x0 and y0 - 10 <= t[1] <= y0 + height]  # the y tick labels
    below = [t for t in texts if t[1] < y0 and x0 - 10 <= t[0] <= x0 + width]  # the x tick labels
    to_y = _axis([p[0][1] for p in grid if p[0][1] == p[1][1]], left, key=1)
    x_ticks = _ticks([p[0][0] for p in grid if p[0][0] == p[1][0]], below, key=0)
    samples = sorted((s for s in legend if x0 <= s[1][0][0] <= x0 + width), key=lambda s: -s[1][0][1])
    right = samples[0][1][-1][0]
    labels = sorted((t for t in texts if right < t[0] < right + 20 and not _number(t[2])), key=lambda t: -t[1])
    gaps = {round(sample[1][0][1] - label[1], 3) for sample, label in zip(samples, labels)}
    if len(labels) != len(samples) or len(gaps) != 1:
        raise ValueError(f"panel at {clip}: {len(labels)} legend labels for {len(samples)} line samples")
    names = {colour: label[2] for (colour, _), label in zip(samples, labels)}
    series = {}
    for c, colour, path in figure.paths:
        if c == clip and colour in names:
            if [round(x, 3) for x, _ in path] != [round(x, 3) for x, _ in x_ticks]:
                raise ValueError(f"panel at {clip}: a series of {names[colour]} is not drawn at the x ticks")
            series[names[colour]] = [round(to_y(y), 3) for _, y in path]
    title = next(t[2] for t in texts if t[1] > y0 + height)
    return Panel(title, [v for _, v in x_ticks], series)


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _ticks(lines: list[float], texts: list, key: int) -> list[tuple[float, float]]:
    """(grid line position, tick value) pairs: the k-th grid line carries the k-th tick label."""
    values = [float(t[2]) for t in sorted(texts, key=lambda t: t[key]) if _number(t[2])]
    if len(values) != len(lines):
        raise ValueError(f"{len(lines)} grid lines but {len(values)} tick labels")
    return list(zip(sorted(lines), values))


def _axis(lines: list[float], texts: list, key: int):
    """The linear map from a page coordinate to the axis value, checked on every tick."""
    ticks = _ticks(lines, texts, key)
    (p0, v0), (p1, v1) = ticks[0], ticks[-1]
    scale = (v1 - v0) / (p1 - p0)
    if any(abs(v0 + (p - p0) * scale - v) > 1e-4 for p, v in ticks):
        raise ValueError("the axis is not linear in its ticks")
    return lambda p: v0 + (p - p0) * scale


def _print(found: list[Panel]) -> None:
    for panel in found:
        print(f"\n{panel.title}: " + " ".join(f"{x:g}" for x in panel.x_ticks))
        for name, values in panel.series.items():
            print(f"  {name:24s} " + " ".join(f"{v:8.3f}" for v in values))


def _compare(found: list[Panel], other: list[Panel]) -> int:
    """Print how the values both figures plot differ; 0 when they are equal."""
    base = lambda name: name.split(" (")[0]  # noqa: E731  (a legend may add the parameter count)
    theirs = {(p.title, base(n)): v for p in other for n, v in p.series.items()}
    shared = [(p.title, base(n), v, theirs[p.title, base(n)]) for p in found for n, v in p.series.items()
              if (p.title, base(n)) in theirs]  # fmt: skip
    worst = max((abs(a - b) for *_, ours, them in shared for a, b in zip(ours, them)), default=float("nan"))
    count = sum(len(v) for *_, v, _ in shared)
    print(f"\ncompared {count} values of {len(shared)} series: largest difference {worst:.3g}")
    return 0 if shared and worst < 1e-3 else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("pdf")
    parser.add_argument("--page", type=int, required=True, help="1-based page number")
    parser.add_argument("--figure", help="the figure's XObject name, e.g. Im6 (default: the page itself)")
    parser.add_argument("--compare", help="another figure as PDF:PAGE[:XOBJECT]")
    args = parser.parse_args(argv)
    try:
        found = panels(drawing(args.pdf, args.page, args.figure))
        other = None
        if args.compare:
            pdf, page, *figure = args.compare.split(":")
            other = panels(drawing(pdf, int(page), *figure))
    except (OSError, ValueError, KeyError, IndexError, pypdf.errors.PdfReadError) as exc:
        print(f"figure_values: cannot read a plotted figure there ({type(exc).__name__}: {exc})", file=sys.stderr)
        return 2
    _print(found)
    return 0 if other is None else _compare(found, other)


if __name__ == "__main__":
    sys.exit(main())
