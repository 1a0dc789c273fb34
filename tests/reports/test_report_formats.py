"""Every report format rendered from a fixed set of records, compared with golden files.

Regenerate after an intended change with `PEFTBENCH_REGENERATE_GOLDEN=1 python -m pytest tests/reports/test_report_formats.py`
and review the diff.
"""

import json
import os
import xml.etree.ElementTree as ElementTree
from dataclasses import replace
from pathlib import Path

import pytest
from record_factory import as_records, runs_frame_of

from peftbench.record import Execution
from peftbench.reports.leaderboard import build_leaderboard, runs_frame
from peftbench.reports.render import render
from peftbench.suites import get_suite

GOLDEN = Path(__file__).parent / "golden"
DEMO = get_suite("demo")
TOP1 = {  # method -> task -> (seed 42, seed 44)
    "lora": {"textures": (80.0, 84.0), "landcover": (90.0, 90.0), "count": (50.0, 60.0), "position": (70.0, 74.0)},
    "linear": {"textures": (72.8, 72.8), "landcover": (95.4, 95.4), "count": (52.4, 52.4), "position": (46.6, 46.6)},
}
TRAINABLE = {"lora": 37_632, "linear": 0}


def _record(method: str, task: str, seed: int, top1: float) -> dict:
    classes = DEMO.task(task).num_classes
    head = 128 * classes + classes
    return {
        "schema": 1,
        "status": "ok",
        "key": f"{method}{task}{seed}",
        "kind": "final",
        "spec": {
            "suite": "demo",
            "task": task,
            "method": method,
            "model": "vit_micro_patch4_32",
            "weights": "d0245088c80977c2" * 4,
            "seed": seed,
            "settings": {"lr": 1e-3},
            "protocol": "tune",
            "train_split": "train800val200",
            "eval_split": "test",
            "recipe": "vtab-resize",
        },
        "finished_at": "2026-11-26T00:00:00+00:00",
        "metrics": {"test_top1": top1},
        "params": {"trainable": TRAINABLE[method] + head, "trainable_without_head": TRAINABLE[method]},
        "timing": {
            "train_seconds": 20.0 if method == "lora" else 1.5,
            "train_images_per_second": 500.0,
            "eval_seconds": 0.25,
        },
        "memory": {"peak_mb": 900.0},
        "evaluated_merged": method == "lora",
        "used_cached_features": method == "linear",
        "data": {
            "eval_size": 500,
            "fingerprints": {
                "test": {"sha256": f"{task}-test-digest"},
                "train800val200": {"sha256": f"{task}-train-digest"},
            },
        },
        "device": "cpu (x86_64, 2 threads)",
        "versions": {"peftbench": "0.1.0"},
        "git_commit": "0123456789abcdef",
    }


def _board():
    records = [
        _record(method, task, seed, value)
        for method, tasks in TOP1.items()
        for task, values in tasks.items()
        for seed, value in zip((42, 44), values)
    ]
    return build_leaderboard(runs_frame_of(records), DEMO)


@pytest.mark.parametrize(
    "fmt, suffix", [("md", "md"), ("csv", "csv"), ("json", "json"), ("latex", "tex"), ("html", "html")]
)
def test_each_format_matches_its_golden_file(fmt: str, suffix: str):
    text = render(_board(), fmt)
    golden = GOLDEN / f"demo_leaderboard.{suffix}"
    if os.environ.get("PEFTBENCH_REGENERATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text()


def test_best_values_are_bold_and_the_latex_has_booktabs_and_group_headers():
    board = _board()
    markdown = render(board, "md")
    lora = next(line for line in markdown.splitlines() if line.startswith("| lora"))
    linear = next(line for line in markdown.splitlines() if line.startswith("| linear"))
    assert "**82.0 ± 2.8**" in lora and "**95.4 ± 0.0**" in linear  # textures best: lora; landcover: linear
    latex = render(board, "latex")
    for piece in (
        r"\toprule",
        r"\midrule",
        r"\bottomrule",
        r"\multicolumn{2}{c}{Structured}",
        r"\textbf{82.0 $\pm$ 2.8}",
    ):
        assert piece in latex
    assert "_" not in latex.replace(r"\_", "").split(r"\begin{tabular}")[1].split(r"\end{tabular}")[0]


def test_html_is_well_formed_and_json_carries_spread_efficiency_and_provenance():
    board = _board()
    page = ElementTree.fromstring(render(board, "html"))  # one well-formed element
    efficiency = page.find("table[@class='efficiency']")
    assert efficiency is not None and "Inference images/s" in [th.text for th in efficiency.iter("th")]
    assert any("git commit 0123456789abcdef" in (li.text or "") for li in page.find("footer").iter("li"))
    for fmt in ("md", "latex", "html"):  # the same sections in every human-readable format
        text = render(board, fmt)
        assert "Efficiency (measured on the device named" in text and "0123456789abcdef" in text, fmt
    payload = json.loads(render(board, "json"))
    lora = next(r for r in payload["rows"] if r["Method"] == "lora")
    assert lora["count std"] == pytest.approx(50**0.5)
    efficiency = {r["Method"]: r for r in payload["efficiency"]}
    assert efficiency["lora"]["Inference images/s"] == 2000.0 and efficiency["linear"]["Inference images/s"] is None
    assert efficiency["lora"]["Train time (min, all tasks)"] == pytest.approx(80 / 60)
    assert any("git commit 0123456789abcdef" in line for line in payload["provenance"])


VTAB = get_suite("vtab")
RLRR_PUBLISHED = [75.6, 92.4, 72.9, 99.3, 91.5, 89.8, 57.0, 86.8, 95.2, 85.3, 75.9,
                  79.7, 64.2, 53.9, 82.1, 83.9, 53.7, 33.4, 43.6]  # fmt: skip


def _vtab_record(method: str, task: str, top1: float, protocol: str, model: str) -> dict:
    record = _record("lora", "textures", 42, top1)
    record["spec"].update(suite="vtab1k", task=task, method=method, protocol=protocol, model=model)
    record["metrics"] = {"test_top1": top1 - 1.0, "best_test_top1": top1}
    return record


def test_reference_paper_adds_published_rows_and_deltas_only_like_with_like():
    from peftbench.reports.published import with_published

    model = "vit_base_patch16_224.orig_in21k"
    records = [_vtab_record("rlrr", t.name, v + 0.5, "best-test", model) for t, v in zip(VTAB.tasks, RLRR_PUBLISHED)]
    records += [_vtab_record("lora", t.name, 70.0, "best-test", model) for t in VTAB.tasks]
    records += [_vtab_record("noah", t.name, 70.0, "best-test", model) for t in VTAB.tasks]
    board = with_published(build_leaderboard(runs_frame_of(records), VTAB))
    published = board.table.loc["rlrr (published, vit_b16_in21k, best-test)"]
    assert round(published["Mean (flat)"], 2) == 74.54 and round(published["Mean of group means"], 2) == 76.75
    delta = board.table.loc["Δ rlrr − published"]
    assert delta[[t.name for t in VTAB.tasks]].tolist() == pytest.approx([0.5] * 19)
    assert delta["Mean (flat)"] == pytest.approx(0.5)
    assert not any(label.startswith("Δ lora") for label in board.table.index)  # q/v LoRA is not NOAH's LoRA-8
    assert any("no delta" in n and "NOAH's LoRA-8" in n for n in board.notes)
    noah = board.table.loc["Δ noah − published"]  # NOAH's Table 1 row: 75.5 as the mean of group means
    assert round(noah["Mean of group means"], 2) == round(70.0 - 75.4771, 2)
    markdown = render(board, "md")
    assert "Params (M) as printed" in markdown and "| Δ rlrr − published" in markdown


def test_report_command_writes_latex_and_plots_from_stored_records(tmp_path: Path):
    from PIL import Image
    from typer.testing import CliRunner

    from peftbench.cli import app
    from peftbench.store import Store

    store = Store(tmp_path / "results")
    for method, tasks in TOP1.items():
        for task, values in tasks.items():
            for seed, value in zip((42, 44), values):
                store.put(*as_records([_record(method, task, seed, value)]))
    result = CliRunner().invoke(
        app,
        [
            "report",
            "--suite",
            "demo",
            "--results",
            str(store.root),
            "--format",
            "latex",
            "--plot",
            str(tmp_path / "pareto.png"),
            "--heatmap",
            str(tmp_path / "d.svg"),
            "--baseline",
            "linear",
        ],
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == (GOLDEN / "demo_leaderboard.tex").read_text()
    with Image.open(tmp_path / "pareto.png") as image:
        assert image.width > 600 and len(image.convert("RGB").getcolors(1 << 24)) > 10
    missing = CliRunner().invoke(app, ["report", "--suite", "demo", "--results", str(store.root), "--heatmap", "x.png"])
    assert missing.exit_code == 2 and "--heatmap needs --baseline" in missing.stderr


def test_reference_paper_on_a_swin_sweep_shows_the_swin_rows_and_names_why_none_pairs():
    from peftbench.reports.published import with_published

    model = "swin_base_patch4_window7_224.ms_in22k"
    records = as_records([_vtab_record("bitfit", t.name, 70.0, "tune", model) for t in VTAB.tasks])
    swin = Execution(backbone="swin, 24 blocks, 224 px")  # what anatomy.describe writes
    board = with_published(build_leaderboard(runs_frame([replace(r, execution=swin) for r in records]), VTAB))
    published = board.table.loc["bitfit (published, swin_b_in22k, unknown)"]
    assert round(published["Mean (flat)"], 2) == 62.05 and round(published["Mean of group means"], 1) == 65.6
    assert not any("vit_b16" in label for label in board.table.index)
    assert "bitfit (published, swin_b_in22k, unknown): no delta (bitfit: published row's protocol is not stated)." in (
        board.notes
    )
    markdown = render(board, "md")
    assert "\n| bitfit (published, swin_b_in22k, unknown) " in markdown
