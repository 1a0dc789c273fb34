"""All 19 VTAB-1k and 5 FGVC tasks from miniature trees in the users' on-disk layouts, end to end."""

from pathlib import Path

import pytest
from trees import write_fgvc_tree, write_vtab_tree
from typer.testing import CliRunner

from peftbench.cli import app
from peftbench.store import Store
from peftbench.suites import get_suite

runner = CliRunner()
LAYOUTS = {"vtab": write_vtab_tree, "fgvc": write_fgvc_tree}


@pytest.fixture(scope="module", params=["vtab", "fgvc"])
def tree(request, tmp_path_factory) -> tuple[str, Path]:
    root = tmp_path_factory.mktemp(request.param)
    LAYOUTS[request.param](root)
    return request.param, root


def test_data_check_passes_with_size_warnings(tree):
    suite, root = tree
    result = runner.invoke(app, ["data", "check", "--suite", suite, "--data-root", str(root), "--deep"])
    assert result.exit_code == 0, result.output
    assert f"{len(get_suite(suite).tasks)} task(s) ready" in result.stdout
    assert "warning:" in result.stderr and "expected" in result.stderr  # miniature splits, published sizes


def test_one_linear_run_per_task_writes_a_record_each(tree, tmp_path: Path):
    suite, root = tree
    result = runner.invoke(
        app,
        [
            "run",
            "--method",
            "linear",
            "--suite",
            suite,
            "--data-root",
            str(root),
            "--model",
            "vit_micro_patch4_32",
            "--no-pretrained",
            "--epochs",
            "1",
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    records = list(Store(tmp_path).records())
    expected = get_suite(suite)
    assert sorted(r.spec.task for r in records) == sorted(t.name for t in expected.tasks)
    assert all(r.status == "ok" and r.spec.train_split == expected.train_split for r in records)
    assert all(r.spec.settings["warmup_epochs"] == 0 for r in records)  # shortened with --epochs 1


def test_data_check_fails_on_a_missing_task_naming_the_path(tmp_path: Path):
    write_fgvc_tree(tmp_path)
    (tmp_path / "NABirds" / "test.json").unlink()
    result = runner.invoke(app, ["data", "check", "--suite", "fgvc", "--data-root", str(tmp_path)])
    assert result.exit_code == 1
    assert any("NABirds/test.json" in line for line in result.stderr.splitlines() if line.startswith("error:"))
    assert "1 task(s) cannot be run: NABirds" in result.stderr


def test_data_check_of_a_missing_root_is_one_line(tmp_path: Path):
    result = runner.invoke(app, ["data", "check", "--suite", "vtab", "--data-root", str(tmp_path / "none")])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and "does not exist" in result.stderr


def test_fgvc_runs_under_rlrr_recipe_record_it(tmp_path: Path):
    write_fgvc_tree(tmp_path / "data")
    result = runner.invoke(
        app,
        [
            "run",
            "-m",
            "linear",
            "-s",
            "fgvc",
            "-t",
            "OxfordFlowers",
            "--data-root",
            str(tmp_path / "data"),
            "--model",
            "vit_micro_patch4_32",
            "--no-pretrained",
            "--epochs",
            "1",
            "--recipe",
            "rlrr-fgvc",
            "--out",
            str(tmp_path / "r"),
        ],
    )
    assert result.exit_code == 0, result.output
    (record,) = list(Store(tmp_path / "r").records())
    assert record.spec.recipe == "rlrr-fgvc" and record.data.recipe["mean_std"] == [[0.5] * 3, [0.5] * 3]
    assert not record.execution.used_cached_features  # crops and flips change the inputs every epoch
    bad = runner.invoke(app, ["run", "-m", "linear", "-s", "fgvc", "--recipe", "nope", "--data-root", str(tmp_path)])
    assert (
        bad.exit_code == 2
        and "unknown preprocessing recipe 'nope'; valid recipes: vtab-resize, vtab-resize-hflip, vtab-resize-half"
        in bad.stderr
    )
