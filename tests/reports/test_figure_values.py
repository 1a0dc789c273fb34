"""tools/reference/figure_values.py, which read tasks/reference/published_fewshot_fgvc.csv from the FacT and
Convpass figures: on figures matplotlib draws here in the same style, it gives back the plotted values."""

import sys
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools" / "reference"))
import figure_values  # noqa: E402

SHOTS = [1, 2, 4, 8, 16]
PANELS = {  # FacT Figure 6's Average panel, and a panel of other values on another scale
    "Average": {"NOAH (355K)": [39.816, 50.38, 58.868, 67.736, 76.478], "VPT (74K)": [26.076, 46.758, 56.502, 63.488, 71.948]},
    "Food101": {"NOAH (363K)": [31.81, 51.64, 63.82, 71.5, 76.34], "VPT (74K)": [23.53, 46.66, 60.65, 67.78, 72.6],
                "FacT-TT (61K)": [34.167, 54.003, 64.337, 71.29, 75.847]},
}  # fmt: skip


def _figure(path: Path, panels: dict, size: tuple[float, float]) -> Path:
    """The papers' style: seaborn's white grid on grey, shots on a linear x axis, a legend per panel."""
    with plt.style.context("seaborn-v0_8-darkgrid"):
        fig, axes = plt.subplots(1, len(panels), figsize=size)
        for ax, (title, series) in zip(axes, panels.items()):
            for name, values in series.items():
                ax.plot(SHOTS, values, marker="o", label=name)
            ax.set_xticks(SHOTS)
            ax.set_title(title)
            ax.legend()
        fig.savefig(path)
        plt.close(fig)
    return path


def test_the_plotted_values_come_back_from_the_pdf(tmp_path: Path):
    found = figure_values.panels(figure_values.drawing(str(_figure(tmp_path / "f.pdf", PANELS, (9, 3))), 1))
    assert [p.title for p in found] == list(PANELS)
    for panel in found:
        assert panel.x_ticks == SHOTS and list(panel.series) == list(PANELS[panel.title])
        for name, values in panel.series.items():
            assert values == pytest.approx(PANELS[panel.title][name], abs=1e-3)


def test_compare_passes_on_the_same_values_drawn_at_another_scale_and_fails_on_a_changed_one(tmp_path: Path, capsys):
    first = str(_figure(tmp_path / "a.pdf", PANELS, (9, 3)))
    same = _figure(tmp_path / "b.pdf", PANELS, (12, 5))
    assert figure_values.main([first, "--page", "1", "--compare", f"{same}:1"]) == 0
    assert "compared 25 values of 5 series: largest difference" in capsys.readouterr().out
    changed = {**PANELS, "Food101": {**PANELS["Food101"], "VPT (74K)": [23.53, 46.66, 60.65, 67.78, 72.7]}}
    other = _figure(tmp_path / "c.pdf", changed, (9, 3))
    assert figure_values.main([first, "--page", "1", "--compare", f"{other}:1"]) == 1


def test_a_page_without_such_a_figure_is_a_one_line_error(tmp_path: Path, capsys):
    first = str(_figure(tmp_path / "a.pdf", PANELS, (9, 3)))
    assert figure_values.main([first, "--page", "1", "--figure", "Im9"]) == 2
    assert figure_values.main([first, "--page", "3"]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 2 and all(
        line.startswith("figure_values: cannot read a plotted figure there") for line in errors
    )
