"""The CLI in-process through Typer's runner: a sweep end to end, resume, and every bad input."""

from pathlib import Path

import pytest
from conftest import write_vtab_task
from typer.testing import CliRunner

from peftbench.cli import app
from peftbench.record import SCHEMA_VERSION
from peftbench.store import Store

runner = CliRunner()
MICRO = ["--model", "vit_micro_patch4_32", "--no-pretrained", "--device", "cpu"]


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def records(out: Path) -> list[dict]:
    return list(Store(out).records())


def assert_one_line_error(result, *fragments: str, code: int | None = None):
    assert result.exit_code != 0 and isinstance(result.exception, SystemExit)
    if code is not None:
        assert result.exit_code == code
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors, result.output
    assert any(all(f in line for f in fragments) for line in errors), errors


def test_run_records_then_skips_then_forces_and_reports(vtab_root: Path, tmp_path: Path):
    out = tmp_path / "results"
    args = [
        "run",
        "--method",
        "full",
        "--method",
        "linear",
        "--suite",
        "vtab",
        "--task",
        "cifar100",
        *MICRO,
        "--data-root",
        vtab_root,
        "--epochs",
        "2",
        "--batch-size",
        "16",
        "--out",
        out,
        "--set",
        "warmup_epochs=1",
    ]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert "2 unit(s) finished, 0 skipped, 0 failed" in result.stdout
    full, linear = sorted(records(out), key=lambda r: r.spec.method)
    for record in (full, linear):
        assert record.status == "ok" and record.schema_version == SCHEMA_VERSION
        assert record.spec.suite == "vtab1k" and record.spec.task == "cifar"
        assert record.spec.weights == "random init" and record.spec.seed == 42
        assert record.spec.settings["epochs"] == 2 and record.spec.settings["warmup_epochs"] == 1
        assert record.spec.settings["batch_size"] == 16
        assert 0 <= record.metrics.top1 <= 100
        assert record.params.head == 128 * 100 + 100  # cifar has 100 classes
        assert set(record.provenance.versions) >= {"peftbench", "torch", "timm"}
        assert record.provenance.device.startswith("cpu") and record.timing.wall_seconds > 0
        assert {"git_commit", "finished_at"} <= set(record.to_json()["provenance"]) and record.data is not None
        assert record.timing.train_images_per_second > 0 and record.timing.eval_images_per_second > 0
        # timm's F.scaled_dot_product_attention; `precision=auto` is fp32 on the CPU; the head starts at zero
        assert record.execution.fused_attention and not record.execution.compiled
        assert (record.execution.precision, record.execution.head_init) == ("fp32", "zero")
    assert full.params.trainable == full.params.total == 808_064 + 12_900
    assert linear.params.trainable == 12_900 and linear.params.trainable_without_head == 0
    assert linear.execution.used_cached_features and not full.execution.used_cached_features
    assert full.spec.settings["lr"] == 1e-4 and linear.spec.settings["lr"] == 1e-2

    again = invoke(*args)
    assert again.exit_code == 0 and "0 unit(s) finished, 2 skipped" in again.stdout
    forced = invoke(*args, "--force", "--method", "linear")
    assert forced.exit_code == 0 and "2 unit(s) finished, 0 skipped" in forced.stdout

    report = invoke("report", "--suite", "vtab", "--results", out, "--out", tmp_path / "board.md")
    assert report.exit_code == 0, report.output
    rows = [line for line in report.stdout.splitlines() if line.startswith("|")]
    assert any("full" in row for row in rows) and any("linear" in row for row in rows)
    assert "Mean of group means" in rows[0] and (tmp_path / "board.md").read_text() == report.stdout
    csv = invoke("report", "--suite", "vtab1k", "--results", out, "--format", "csv")
    assert csv.exit_code == 0 and csv.stdout.startswith("Method,cifar,")


def test_a_failing_task_is_recorded_and_the_sweep_goes_on(vtab_root: Path, tmp_path: Path):
    write_vtab_task(vtab_root, "dtd")
    (vtab_root / "cifar" / "test.txt").write_text("images/test/000000.jpg 1\nimages/test/000001.jpg one\n")
    out = tmp_path / "results"
    args = ["run", "-m", "linear", "-s", "vtab", "-t", "cifar", "-t", "dtd", *MICRO, "--data-root", vtab_root,
            "--epochs", "1", "--out", out, "--set", "warmup_epochs=0"]  # fmt: skip
    result = invoke(*args)
    assert_one_line_error(result, "vtab1k/cifar linear seed 42", "cifar/test.txt:2: expected", code=1)
    by_task = {r.spec.task: r for r in records(out)}
    assert by_task["dtd"].status == "ok"
    assert by_task["cifar"].status == "failed" and "test.txt:2" in by_task["cifar"].reason
    # a rerun skips the failed unit (with a warning) unless --retry-failed; the finished one is never rerun
    (vtab_root / "cifar" / "test.txt").write_text("images/test/000000.jpg 0\nimages/test/000001.jpg 1\n")
    again = invoke(*args)
    assert again.exit_code == 1 and "0 unit(s) finished, 2 skipped" in again.stdout  # the failure stands
    assert "1 unit(s) failed in an earlier run and were skipped; --retry-failed reruns them" in again.stderr
    retry = invoke(*args, "--retry-failed")
    assert retry.exit_code == 0 and "1 unit(s) finished, 1 skipped, 0 failed" in retry.stdout


def _break(root: Path, how: str) -> None:
    task = root / "cifar"
    if how == "list file":
        (task / "train800val200.txt").unlink()
    elif how == "line":
        (task / "train800val200.txt").write_text("images/train800/000000.jpg 0\nimages/train800/000001.jpg\n")
    elif how == "label":
        (task / "train800val200.txt").write_text("images/train800/000000.jpg 0\n\nimages/train800/000001.jpg 100\n")
    elif how == "image":
        (task / "images/train800/000005.jpg").unlink()
    elif how == "decode":
        (task / "images/train800/000005.jpg").write_bytes(b"\x00garbage")


@pytest.mark.parametrize(
    "how, fragments",
    [
        ("list file", ["missing list file", "cifar/train800val200.txt", "expected the VTAB-1k layout"]),
        ("line", ["cifar/train800val200.txt:2: expected '<image path> <integer label>'"]),
        ("label", ["cifar/train800val200.txt:3: label 100 outside 0..99"]),
        ("image", ["missing image", "cifar/images/train800/000005.jpg"]),
        ("decode", ["cannot decode image", "cifar/images/train800/000005.jpg"]),
    ],
)
def test_bad_data_gives_one_line_errors_with_paths(vtab_root: Path, tmp_path: Path, how: str, fragments: list[str]):
    _break(vtab_root, how)
    result = invoke(
        "run", "-m", "linear", "-s", "vtab", "-t", "cifar", *MICRO, "--data-root", vtab_root, "--out", tmp_path / "r"
    )
    assert_one_line_error(result, *fragments, code=1)
    (failed,) = records(tmp_path / "r")
    assert failed.status == "failed" and fragments[-1] in failed.reason


@pytest.mark.parametrize(
    "extra, fragments",
    [
        (["-m", "lora9", "-s", "demo"], ["unknown method 'lora9'", "valid methods:", "full, linear"]),
        (
            ["-m", "linear", "-s", "vtab2"],
            [
                "unknown suite 'vtab2'",
                "valid suites: demo, domain_generalization (dg, domain-generalization), fewshot_fgvc (fewshot, few-shot), fgvc, vtab1k (vtab)",
            ],
        ),
        (
            ["-m", "linear", "-s", "vtab", "-t", "cifar10"],
            ["unknown task 'cifar10' in suite 'vtab1k'", "valid tasks: cifar, caltech101"],
        ),
        (["-m", "linear", "-s", "vtab", "--set", "lr"], ["malformed --set 'lr': expected key=value"]),
        (["-m", "linear", "-s", "vtab", "--set", "=3"], ["malformed --set '=3'"]),
        (["-m", "linear", "-s", "vtab", "--set", "rank=8"], ["unknown setting 'rank'", "valid settings:", "lr"]),
        (["-m", "linear", "-s", "vtab", "--set", "lr=fast"], ["setting 'lr': expected float, got 'fast'"]),
        (["-m", "linear", "-s", "vtab", "--set", "optimizer=adam"], ["setting 'optimizer' must be one of adamw, sgd"]),
        (["-m", "linear", "-s", "vtab", "--weights", "w.npz", "--no-pretrained"], ["exclude each other"]),
        (["-m", "linear", "-s", "vtab", "--model", "vit_nope"], ["unknown model 'vit_nope'"]),
    ],
)
def test_bad_arguments_give_one_line_errors(tmp_path: Path, extra: list[str], fragments: list[str]):
    result = invoke("run", *extra, "--data-root", tmp_path, "--out", tmp_path / "r")
    assert_one_line_error(result, *fragments, code=2)
    assert not (tmp_path / "r").exists() or not records(tmp_path / "r")


def test_missing_data_root_names_the_path_and_layout(tmp_path: Path):
    result = invoke(
        "run", "-m", "linear", "-s", "vtab", *MICRO, "--data-root", tmp_path / "nowhere", "--out", tmp_path / "r"
    )
    assert_one_line_error(result, "data root", "nowhere does not exist", "PEFTBENCH_DATA", "train800val200", code=2)


def test_data_root_defaults_to_the_environment_variable(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("PEFTBENCH_DATA", str(tmp_path / "from-env"))
    result = invoke("run", "-m", "linear", "-s", "vtab", *MICRO, "--out", tmp_path / "r")
    assert_one_line_error(result, "from-env does not exist")


def test_report_and_list_errors(tmp_path: Path):
    assert_one_line_error(invoke("report", "--results", tmp_path / "none"), "results folder", "does not exist", code=2)
    assert_one_line_error(invoke("list", "tasks", "--suite", "nope"), "unknown suite 'nope'", code=2)


def test_list_shows_methods_suites_and_tasks():
    methods = invoke("list", "methods")
    assert methods.exit_code == 0 and "full" in methods.stdout and "linear" in methods.stdout
    suites = invoke("list", "suites")
    assert all(name in suites.stdout for name in ("demo", "vtab1k", "fgvc"))
    tasks = invoke("list", "tasks", "--suite", "vtab")
    assert tasks.exit_code == 0 and "smallnorb_ele" in tasks.stdout and "structured" in tasks.stdout


@pytest.mark.parametrize("command", [[], ["run"], ["report"], ["list"]])
def test_every_command_has_help(command: list[str]):
    result = invoke(*command, "--help")
    assert result.exit_code == 0 and "Usage" in result.stdout


def test_describe_shows_the_paper_options_with_help_trainable_count_and_merge():
    result = invoke("describe", "lora")
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert text.startswith("# lora: LoRA (Hu et al. 2022)") and "Equation (Eq. 3)" in text
    assert "rank (int, default 8): r, the rank of each low-rank update" in text
    assert "dropout (float, default 0.0): dropout on the input of the low-rank branch" in text
    assert "Trainable on vit_base_patch16_224 without the head: 294,912" in text  # 12 blocks x 2 x 8 x (768 + 768)
    assert "Merge: folds into a plain timm ViT" in text
    vpt = invoke("describe", "vpt_deep", "--model", "vit_micro_patch4_32").stdout
    assert "prompt_dropout (float, default 0.1)" in vpt and "Merge: no; evaluated unmerged" in vpt
    assert_one_line_error(invoke("describe", "lora9"), "unknown method 'lora9'", "valid methods:", code=2)


def test_every_method_option_has_help_text_and_list_shows_the_options():
    from peftbench.methods import all_methods

    for name, cls in all_methods().items():
        for option, _, _, help_text in cls.describe_options():
            assert help_text, f"{name}.{option} has no help text"
    listed = invoke("list", "methods")
    assert listed.exit_code == 0 and "prompt_len" in listed.stdout and "rank" in listed.stdout
