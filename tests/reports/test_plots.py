"""Plots from a small demo leaderboard: files are real images with the expected labels; bad input is one clear error."""

import re
import subprocess
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image
from record_factory import runs_frame_of

from peftbench.errors import PeftbenchError
from peftbench.reports.leaderboard import FLAT_MEAN, PARAMS_WITH_HEAD, build_leaderboard
from peftbench.reports.plots import accuracy_vs_time_plot, delta_heatmap, deltas, pareto_front, pareto_plot
from peftbench.suites import get_suite

DEMO = get_suite("demo")
TASKS = [t.name for t in DEMO.tasks]  # textures, landcover, count, position
# method -> (trainable params without head, top-1 per task for seed 42, for seed 44 or None)
ROWS = {
    "full": (5_000_000, [80.0, 90.0, 60.0, 70.0], None),
    "lora": (150_000, [82.0, 91.0, 58.0, 74.0], [84.0, 91.0, 62.0, 74.0]),  # two seeds: error bars
    "linear": (0, [60.0, 80.0, 30.0, 40.0], None),  # no params without head: drawn at the log floor
    "bitfit": (100_000, [78.0, 89.0, 55.0, None], None),  # a task missing: no mean, left out of the Pareto plot
}


def _record(task: str, top1: float, method: str, trainable_without_head: int, seed: int = 42) -> dict:
    classes = next(t.num_classes for t in DEMO.tasks if t.name == task)
    spec = {
        "suite": "demo",
        "task": task,
        "method": method,
        "model": "vit_micro_patch4_32",
        "weights": "ab" * 32,
        "seed": seed,
        "settings": {"lr": 1e-3},
        "protocol": "default",
        "train_split": "train800val200",
        "eval_split": "test",
    }
    return {
        "schema": 1,
        "status": "ok",
        "spec": spec,
        "finished_at": "2026-01-01T00:00:00",
        "metrics": {"test_top1": top1},
        "params": {
            "trainable": trainable_without_head + 193 * classes,
            "trainable_without_head": trainable_without_head,
        },
    }


def _board(rows: dict = ROWS):
    records = []
    for method, (params, first, second) in rows.items():
        for seed, values in ((42, first), (44, second)):
            records += [_record(task, v, method, params, seed) for task, v in zip(TASKS, values or []) if v is not None]
    return build_leaderboard(runs_frame_of(records), DEMO)


@pytest.fixture(scope="module")
def board():
    return _board()


def _check_png(path) -> None:
    """A real, non-blank picture of a sensible size with coloured marks on it."""
    with Image.open(path) as image:
        assert image.format == "PNG"
        pixels = np.asarray(image.convert("RGB")).astype(int)
    height, width, _ = pixels.shape
    assert width > 600 and height > 400  # figsize x 200 dpi, give or take the tight bounding box
    assert ((pixels < 240).any(axis=2)).sum() > 1000  # not blank
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 10  # several distinct colours ...
    assert ((pixels.max(axis=2) - pixels.min(axis=2)) > 80).sum() > 100  # ... some of them saturated


def _svg_texts(path) -> str:
    """All text of an SVG file (which must parse as XML), joined by newlines."""
    root = ET.parse(path).getroot()
    assert root.tag.endswith("svg")
    return "\n".join(t for element in root.iter() if element.tag.endswith("text") for t in element.itertext())


def test_pareto_plot_png_is_a_real_picture(board, tmp_path):
    pareto_plot(board, tmp_path / "pareto.png")
    _check_png(tmp_path / "pareto.png")


def test_pareto_plot_svg_labels_rows_axes_and_skips_incomplete_rows(board, tmp_path):
    pareto_plot(board, tmp_path / "pareto.svg")
    text = _svg_texts(tmp_path / "pareto.svg")
    for label in (
        "full",
        "lora",
        "linear (0 params)",
        "Mean (flat) top-1 (%)",
        "Trainable parameters (M), head excluded",
        "demo",
        "Pareto front",
    ):
        assert label in text
    assert "bitfit" not in text  # no flat mean: skipped


def test_pareto_plot_with_head_counts_linear_as_nonzero(board, tmp_path):
    pareto_plot(board, tmp_path / "pareto.svg", params_column=PARAMS_WITH_HEAD)
    text = _svg_texts(tmp_path / "pareto.svg")
    assert "Trainable parameters (M), head included" in text
    assert "linear" in text and "0 params" not in text


def test_pareto_front_keeps_only_undominated_points():
    points = {
        "linear": (0.0, 50.0),
        "bitfit": (0.1, 70.0),
        "worse": (0.2, 65.0),
        "lora": (0.3, 75.0),
        "full": (85.0, 74.0),
    }
    assert pareto_front(points) == ["linear", "bitfit", "lora"]


def test_pareto_plot_errors_are_one_clear_line(board, tmp_path):
    with pytest.raises(PeftbenchError, match=r"suffix must be one of \.png, \.svg"):
        pareto_plot(board, tmp_path / "pareto.pdf")
    with pytest.raises(PeftbenchError, match="no column 'Mean' in the demo leaderboard; valid columns: textures"):
        pareto_plot(board, tmp_path / "pareto.png", mean_column="Mean")
    only_bitfit = _board({"bitfit": ROWS["bitfit"]})
    with pytest.raises(PeftbenchError, match="nothing to plot: no row .* has both 'Mean \\(flat\\)'"):
        pareto_plot(only_bitfit, tmp_path / "pareto.png")
    assert not any(tmp_path.iterdir())


def test_accuracy_vs_time_png_and_svg(board, tmp_path):
    seconds = {"full": 1800.0, "lora": 1200.0, "linear": 300.0, "bitfit": 900.0}
    accuracy_vs_time_plot(board, seconds, tmp_path / "time.png")
    _check_png(tmp_path / "time.png")
    accuracy_vs_time_plot(board, seconds, tmp_path / "time.svg")
    text = _svg_texts(tmp_path / "time.svg")
    assert "Training time (min)" in text and "lora" in text and "linear" in text and "bitfit" not in text
    with pytest.raises(PeftbenchError, match="no row 'lorra'.*valid rows: "):
        accuracy_vs_time_plot(board, {"lorra": 1.0}, tmp_path / "time.png")


def test_deltas_are_row_minus_baseline_in_group_order(board):
    diff = deltas(board, "full")
    assert list(diff.index) == ["bitfit", "linear", "lora"]  # the table's order, baseline dropped
    assert list(diff.columns) == ["textures", "landcover", "count", "position", FLAT_MEAN]
    assert diff.at["lora", "textures"] == pytest.approx(3.0)  # (82 + 84) / 2 - 80
    assert diff.at["linear", "count"] == pytest.approx(-30.0)
    assert np.isnan(diff.at["bitfit", "position"]) and np.isnan(diff.at["bitfit", FLAT_MEAN])


def test_delta_heatmap_png_and_svg(board, tmp_path):
    delta_heatmap(board, "full", tmp_path / "delta.png")
    _check_png(tmp_path / "delta.png")
    delta_heatmap(board, "full", tmp_path / "delta.svg")
    text = _svg_texts(tmp_path / "delta.svg")
    for label in ("lora", "linear", "bitfit", "textures", "Natural", "Structured", "+3.0", "-30.0"):
        assert label in text
    assert "nan" not in text.lower()  # missing cells stay blank
    cells = [t for t in text.splitlines() if re.fullmatch(r"[+-]\d+\.\d", t)]  # colorbar ticks use U+2212, no +
    assert len(cells) == 3 * 5 - 2  # every cell but bitfit's position and mean


def test_delta_heatmap_errors(board, tmp_path):
    with pytest.raises(PeftbenchError, match="unknown baseline row 'vpt'; valid rows: bitfit, full, linear, lora"):
        delta_heatmap(board, "vpt", tmp_path / "delta.png")
    with pytest.raises(PeftbenchError, match="'full' is the only row"):
        delta_heatmap(_board({"full": ROWS["full"]}), "full", tmp_path / "delta.png")
    with pytest.raises(PeftbenchError, match="suffix"):
        delta_heatmap(board, "full", tmp_path / "delta.jpg")


def test_importing_report_and_plots_does_not_import_matplotlib():
    code = "import sys, peftbench.reports.leaderboard, peftbench.reports.plots; sys.exit('matplotlib' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_critical_difference_diagram_ranks_rows_with_friedman_and_nemenyi(board, tmp_path):
    from scipy import stats

    from peftbench.reports.plots import cd_diagram, critical_difference

    result = critical_difference(board)  # bitfit lacks a task: left out
    # per task (seed means): lora 83, 91, 60, 74; full 80, 90, 60, 70; linear 60, 80, 30, 40
    assert result.average_ranks == {"lora": 1.125, "full": 1.875, "linear": 3.0}
    q = stats.studentized_range.ppf(0.95, 3, np.inf) / np.sqrt(2)
    assert result.critical_difference == pytest.approx(q * np.sqrt(3 * 4 / (6 * 4)))  # k = 3 rows, N = 4 tasks
    assert result.friedman_p == pytest.approx(
        stats.friedmanchisquare([83, 91, 60, 74], [80, 90, 60, 70], [60, 80, 30, 40]).pvalue
    )
    cd_diagram(board, tmp_path / "cd.svg")
    text = _svg_texts(tmp_path / "cd.svg")
    assert "CD = " in text and "lora (1.12)" in text and "Friedman p" in text and "bitfit" not in text
    with pytest.raises(PeftbenchError, match="needs 3 or more rows"):
        critical_difference(_board({k: ROWS[k] for k in ("full", "lora")}))
