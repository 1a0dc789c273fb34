"""The leaderboard: means checked against hand-computed numbers, parameter columns, missing cells."""

import json

import pandas as pd
import pytest
from record_factory import runs_frame_of

from peftbench.reports.leaderboard import (
    FLAT_MEAN,
    GROUP_MEAN,
    PARAMS_WITH_HEAD,
    PARAMS_WITHOUT_HEAD,
    build_leaderboard,
)
from peftbench.reports.render import render
from peftbench.suites import get_suite

VTAB = get_suite("vtab")
# RLRR, ViT-B/16 IN-21k, as printed in Table 1 of the RLRR paper (arXiv 2403.19067; tasks/reference/published_vtab1k.csv)
RLRR_ROW = [75.6, 92.4, 72.9, 99.3, 91.5, 89.8, 57.0, 86.8, 95.2, 85.3, 75.9,
            79.7, 64.2, 53.9, 82.1, 83.9, 53.7, 33.4, 43.6]  # fmt: skip
RLRR_WITHOUT_HEAD = 288_768  # ViT-B/16: 23,808 per block x 12 + SSF pairs


def _record(
    task: str,
    top1: float,
    seed: int = 42,
    method: str = "rlrr",
    trainable_without_head: int = RLRR_WITHOUT_HEAD,
    classes: int = 0,
    settings: dict | None = None,
    finished_at: str = "2026-01-01T00:00:00",
) -> dict:
    head = 768 * classes + classes
    spec = {
        "suite": "vtab1k",
        "task": task,
        "method": method,
        "model": "vit_base_patch16_224",
        "weights": "ab" * 32,
        "seed": seed,
        "settings": settings or {"lr": 1e-3},
        "protocol": "default",
        "train_split": "train800val200",
        "eval_split": "test",
    }
    return {
        "schema": 1,
        "status": "ok",
        "spec": spec,
        "finished_at": finished_at,
        "metrics": {"test_top1": top1},
        "params": {"trainable": trainable_without_head + head, "trainable_without_head": trainable_without_head},
    }


def _rlrr_records() -> list[dict]:
    records = [_record(t.name, v, classes=t.num_classes) for t, v in zip(VTAB.tasks, RLRR_ROW)]
    # cifar with two seeds that average to the printed 75.6
    records[0] = _record("cifar", 75.0, seed=42, classes=100)
    records.append(_record("cifar", 76.2, seed=44, classes=100))
    return records


def test_flat_mean_and_mean_of_group_means_match_hand_computation():
    board = build_leaderboard(runs_frame_of(_rlrr_records()), VTAB)
    row = board.table.loc["rlrr"]
    assert row["cifar"] == pytest.approx(75.6)
    assert row["Natural (mean)"] == pytest.approx(578.5 / 7)
    assert row["Specialized (mean)"] == pytest.approx(343.2 / 4)
    assert row["Structured (mean)"] == pytest.approx(494.5 / 8)
    assert row[FLAT_MEAN] == pytest.approx(1416.2 / 19)  # 74.54, RLRR's printed "Mean"
    assert round(row[FLAT_MEAN], 2) == 74.54
    assert row[GROUP_MEAN] == pytest.approx((578.5 / 7 + 343.2 / 4 + 494.5 / 8) / 3)
    assert round(row[GROUP_MEAN], 2) == 76.75


def test_parameter_columns_average_over_tasks_with_and_without_head():
    board = build_leaderboard(runs_frame_of(_rlrr_records()), VTAB)
    row = board.table.loc["rlrr"]
    mean_classes = sum(t.num_classes for t in VTAB.tasks) / 19
    assert row[PARAMS_WITH_HEAD] == pytest.approx((RLRR_WITHOUT_HEAD + 769 * mean_classes) / 1e6)
    assert row[PARAMS_WITHOUT_HEAD] == pytest.approx(0.288768)
    assert row["Seeds"] == 1  # every task has at least one seed; cifar has two


def test_missing_cells_are_missing_not_zero_and_dependent_means_blank():
    records = [r for r in _rlrr_records() if r["spec"]["task"] != "dmlab"]
    board = build_leaderboard(runs_frame_of(records), VTAB)
    row = board.table.loc["rlrr"]
    assert pd.isna(row["dmlab"]) and pd.isna(row["Structured (mean)"])
    assert pd.isna(row[FLAT_MEAN]) and pd.isna(row[GROUP_MEAN]) and pd.isna(row[PARAMS_WITH_HEAD])
    assert row["Natural (mean)"] == pytest.approx(578.5 / 7)
    markdown = render(board, "md")
    assert "–" in markdown and "no finished run" in markdown
    line = next(line for line in markdown.splitlines() if line.startswith("|") and "rlrr" in line)
    assert " 0.0 " not in line


def test_newest_settings_win_and_failed_runs_are_ignored():
    records = _rlrr_records()
    records.append(_record("svhn", 10.0, settings={"lr": 0.5}, finished_at="2025-01-01T00:00:00"))  # older settings
    failed = _record("dtd", 0.0)
    failed["status"] = "failed"
    records.append(failed)
    row = build_leaderboard(runs_frame_of(records), VTAB).table.loc["rlrr"]
    assert row["svhn"] == pytest.approx(89.8) and row["dtd"] == pytest.approx(72.9)


def test_markdown_labels_both_means_and_both_parameter_conventions():
    records = _rlrr_records() + [
        _record(t.name, 50.0, method="linear", trainable_without_head=0, classes=t.num_classes) for t in VTAB.tasks
    ]
    markdown = render(build_leaderboard(runs_frame_of(records), VTAB), "md")
    header = next(line for line in markdown.splitlines() if line.startswith("|"))
    for label in ("cifar", "Natural (mean)", FLAT_MEAN, GROUP_MEAN, PARAMS_WITH_HEAD, PARAMS_WITHOUT_HEAD):
        assert label in header
    assert "mean over the 19 tasks" in markdown and "mean of the 3 group means" in markdown
    assert "classification head included" in markdown
    rlrr_line = next(line for line in markdown.splitlines() if line.startswith("| rlrr "))
    assert "74.5" in rlrr_line and "76.8" in rlrr_line and "0.29" in rlrr_line


def test_csv_and_json_carry_the_same_numbers():
    board = build_leaderboard(runs_frame_of(_rlrr_records()), VTAB)
    csv_text = render(board, "csv")
    assert csv_text.splitlines()[0].startswith("Method,cifar,cifar std,caltech101")  # cifar has two seeds
    payload = json.loads(render(board, "json"))
    assert payload["suite"] == "vtab1k"
    assert payload["rows"][0][FLAT_MEAN] == pytest.approx(1416.2 / 19)


DEMO = get_suite("demo")
SEED_VALUES = {"textures": (80.0, 84.0), "landcover": (90.0, 90.0), "count": (50.0, 60.0), "position": (70.0, 74.0)}


def _demo_record(task: str, seed: int, top1: float) -> dict:
    record = _record(task, top1, seed=seed, method="lora", classes=5)
    record["spec"]["suite"] = "demo"
    return record


def test_seeds_give_mean_and_std_per_task_and_the_std_of_the_suite_mean():
    records = [
        _demo_record(task, seed, value) for task, values in SEED_VALUES.items() for seed, value in zip((42, 44), values)
    ]
    board = build_leaderboard(runs_frame_of(records), DEMO)
    row, spread = board.table.loc["lora"], board.spread.loc["lora"]
    assert row["count"] == pytest.approx(55.0) and spread["count"] == pytest.approx(50**0.5)  # sample std
    assert spread["landcover"] == 0.0
    assert row[FLAT_MEAN] == pytest.approx(74.75)
    assert spread[FLAT_MEAN] == pytest.approx(4.5 / 2**0.5)  # per-seed flat means 72.5 and 77.0
    assert row[GROUP_MEAN] == pytest.approx(78.5)
    assert spread[GROUP_MEAN] == pytest.approx(((84.0 + 90 + 67) / 3 - (80.0 + 90 + 60) / 3) / 2**0.5)
    assert row["Seeds"] == 2
    line = next(line for line in render(board, "md").splitlines() if line.startswith("| lora"))
    assert "55.0 ± 7.1" in line and "74.8 ± 3.2" in line and "90.0 ± 0.0" in line
    assert render(board, "csv").splitlines()[0].startswith("Method,textures,textures std,landcover,landcover std")


def test_trials_never_enter_a_table_and_best_test_rows_use_their_maximum():
    trial = _demo_record("textures", 42, 99.0)
    trial["kind"] = "trial"
    best = _demo_record("textures", 42, 60.0)
    best["spec"]["protocol"] = "best-test"
    best["metrics"]["best_test_top1"] = 66.0
    board = build_leaderboard(runs_frame_of([_demo_record("textures", 42, 61.0), trial, best]), DEMO)
    assert board.table.loc["lora (default)", "textures"] == 61.0
    assert board.table.loc["lora (best-test)", "textures"] == 66.0 and len(board.table) == 2
    assert any("test-selected" in note for note in board.notes)


def test_a_report_runs_without_torch(tmp_path):
    """`reports/` imports neither torch nor the sweeps: a laptop with only the records renders them."""
    import subprocess
    import sys
    from pathlib import Path

    results = Path(__file__).parents[1] / "fixtures" / "results_d110afe"
    code = (
        "import sys; from typer.testing import CliRunner; from peftbench.cli import app; "
        f"result = CliRunner().invoke(app, ['report', '--suite', 'vtab', '--results', {str(results)!r}]); "
        "assert result.exit_code == 0, result.output; "
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'timm') or m.startswith('peftbench.sweeps')); "
        "sys.exit(f'loaded: {loaded}' if loaded else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
