"""Sweeps that survive: the tune protocol end to end, failures kept local, SIGKILL and resume,
`peftbench status`, local worker processes and submitit's local executor."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import write_vtab_task
from typer.testing import CliRunner

from peftbench.cli import app
from peftbench.store import Store
from peftbench.sweeps.manifest import manifests

runner = CliRunner()
TASKS = ("cifar", "dtd", "svhn")


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def three_tasks(tmp_path: Path) -> Path:
    root = tmp_path / "vtab-1k"
    for seed, task in enumerate(TASKS):
        write_vtab_task(root, task, sizes={"train800": 32, "val200": 16, "test": 24}, seed=seed)
    return root


def tune_args(root: Path, out: Path, *tasks: str, grid: str = "lr=0,0.3", seeds: int = 2) -> list:
    task_args = [a for t in tasks for a in ("-t", t)]
    return [
        "run",
        "-m",
        "linear",
        "-s",
        "vtab",
        *task_args,
        "--model",
        "vit_micro_patch4_32",
        "--device",
        "cpu",
        "--data-root",
        root,
        "--out",
        out,
        "--epochs",
        "3",
        "--set",
        "warmup_epochs=0",
        "--set",
        "min_lr=0",
        "--protocol",
        "tune",
        "--grid",
        grid,
        "--seeds",
        seeds,
    ]


def records(out: Path) -> list[dict]:
    return list(Store(out).records())


def record_files(out: Path) -> list[Path]:
    return [p for p in out.glob("**/*.json") if ".sweeps" not in p.parts]


def status_totals(out: Path) -> dict[str, int]:
    result = invoke("status", "--results", out)
    assert result.exit_code == 0, result.output
    line = result.stdout.strip().splitlines()[-1]
    found = dict((state, int(n)) for n, state in re.findall(r"(\d+) (done|failed|running|pending)", line))
    found["total"] = int(re.search(r"of (\d+) unit", line).group(1))
    return found


def test_tune_picks_the_best_val_setting_and_a_diverging_trial_fails_alone(three_tasks: Path, tmp_path: Path):
    out = tmp_path / "results"
    result = invoke(*tune_args(three_tasks, out, "cifar", grid="lr=0,0.3,1e30"))
    assert result.exit_code == 1  # one unit failed; the others finished
    assert re.search(r"error: vtab1k/cifar linear trial lr=1e\+30: training loss became (nan|inf)", result.stderr)
    assert "4 unit(s) finished, 0 skipped, 1 failed" in result.stdout
    trials = sorted((r for r in records(out) if r.kind == "trial"), key=lambda r: r.unit.grid_point["lr"])
    finals = sorted((r for r in records(out) if r.kind == "final"), key=lambda r: r.spec.seed)
    assert [t.status for t in trials] == ["ok", "ok", "failed"]
    assert trials[0].metrics.top1 == 50.0  # lr 0 leaves the zero head: chance on two balanced classes
    assert trials[1].metrics.top1 > 90.0
    for trial in trials:
        assert (trial.spec.train_split, trial.spec.eval_split) == ("train800", "val200")
        assert trial.metrics is None or trial.metrics.split == "val"  # trials never see the test split
    assert [f.spec.seed for f in finals] == [42, 44]
    for final in finals:
        assert final.status == "ok" and final.spec.settings["lr"] == 0.3
        assert (final.spec.train_split, final.spec.eval_split) == ("train800val200", "test")
        selection = final.selection
        assert selection["chosen_point"] == {"lr": 0.3}
        assert [t.get("val_top1") for t in selection["trials"]] == [50.0, trials[1].metrics.top1, None]
        assert "loss became" in selection["trials"][2]["reason"]
    assert status_totals(out) == {"done": 4, "failed": 1, "running": 0, "pending": 0, "total": 5}
    # a rerun skips the failed trial unless --retry-failed, and reports mean ± std over the seeds
    again = invoke(*tune_args(three_tasks, out, "cifar", grid="lr=0,0.3,1e30"))
    assert again.exit_code == 1 and "0 unit(s) finished, 5 skipped" in again.stdout  # the failure stands
    retried = invoke(*tune_args(three_tasks, out, "cifar", grid="lr=0,0.3,1e30"), "--retry-failed")
    assert retried.exit_code == 1 and "0 unit(s) finished, 4 skipped, 1 failed" in retried.stdout
    report = invoke("report", "--suite", "vtab", "--results", out)
    row = next(line for line in report.stdout.splitlines() if line.startswith("| linear"))
    assert "100.0 ± 0.0" in row and row.split("|")[-2].strip() == "tune" and row.split("|")[-3].strip() == "2"


def test_a_sweep_killed_with_sigkill_resumes_with_every_record_exactly_once(three_tasks: Path, tmp_path: Path):
    out = tmp_path / "results"
    args = tune_args(three_tasks, out, *TASKS, seeds=3)  # 3 tasks x (2 trials + 3 finals) = 15 units
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "peftbench", *map(str, args)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while len(record_files(out)) < 4 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the sweep finished before it could be killed"
    before = {p: p.read_bytes() for p in record_files(out)}
    assert 4 <= len(before) < 15
    assert status_totals(out) == {
        "done": len(before),
        "failed": 0,
        "running": 0,
        "pending": 15 - len(before),
        "total": 15,
    }
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert f"{15 - len(before)} unit(s) finished, {len(before)} skipped, 0 failed" in result.stdout
    after = record_files(out)
    (manifest,) = manifests(out)
    assert sorted(r.key for r in records(out)) == sorted(u["key"] for u in manifest["units"])  # once each
    assert len(after) == 15 and all(p.read_bytes() == data for p, data in before.items())  # none lost or rewritten
    assert status_totals(out) == {"done": 15, "failed": 0, "running": 0, "pending": 0, "total": 15}


def test_two_local_workers_share_a_tune_sweep(three_tasks: Path, tmp_path: Path):
    out = tmp_path / "results"
    result = invoke(*tune_args(three_tasks, out, "cifar", "dtd"), "--workers", "2")
    assert result.exit_code == 0, result.output
    assert "8 unit(s) finished, 0 skipped, 0 failed" in result.stdout
    found = records(out)
    assert len(found) == 8 == len({r.key for r in found})
    assert {r.unit.worker for r in found} <= {"cpu0", "cpu1"} and all(r.status == "ok" for r in found)
    for final in (r for r in found if r.kind == "final"):
        trial_sessions = {t["key"] for t in final.selection["trials"]}
        assert len(trial_sessions) == 2  # every final chose among both of its trials


def test_submitit_local_executor_runs_the_array(three_tasks: Path, tmp_path: Path, monkeypatch):
    pytest.importorskip("submitit")
    monkeypatch.setenv("PEFTBENCH_SUBMITIT_CLUSTER", "local")
    out = tmp_path / "results"
    result = invoke(
        *tune_args(three_tasks, out, "cifar", seeds=1),
        "--launcher",
        "slurm",
        "--workers",
        "2",
        "--partition",
        "gpu",
        "--time",
        "10",
        "--gpus-per-node",
        "0",
        "--wait",
    )
    assert result.exit_code == 0, result.output
    assert "submitted job array" in result.stdout and "3 unit(s) finished" in result.stdout
    found = records(out)
    assert len(found) == 3 and {r.unit.worker for r in found} <= {"array0", "array1"}


def test_slurm_array_tasks_pack_runs_per_gpu(three_tasks: Path, tmp_path: Path, monkeypatch):
    pytest.importorskip("submitit")
    monkeypatch.setenv("PEFTBENCH_SUBMITIT_CLUSTER", "local")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # a CPU machine: the packed workers fall back to the CPU
    out = tmp_path / "results"
    result = invoke(
        *tune_args(three_tasks, out, "cifar", seeds=1),
        "--launcher",
        "slurm",
        "--runs-per-gpu",
        "2",
        "--gpus-per-node",
        "0",
        "--wait",
    )
    assert result.exit_code == 0, result.output
    assert "(2 worker task(s)) for 3 unit(s)" in result.stdout and "3 unit(s) finished" in result.stdout
    found = records(out)
    assert len(found) == 3
    assert {r.unit.worker for r in found} <= {f"array{t}.gpu0.{r}" for t in (0, 1) for r in (0, 1)}


def test_runs_per_gpu_without_a_gpu_is_refused_in_one_line(three_tasks: Path, tmp_path: Path):
    result = invoke(*tune_args(three_tasks, tmp_path / "results", "cifar", seeds=1), "--runs-per-gpu", "2")
    assert result.exit_code == 2 and "torch sees none" in result.stderr and "--workers" in result.stderr


def test_paper_protocol_runs_the_published_settings_and_refuses_methods_without_them(three_tasks: Path, tmp_path: Path):
    out = tmp_path / "results"
    base = [
        "run",
        "-s",
        "vtab",
        "-t",
        "dtd",
        "--model",
        "vit_micro_patch4_32",
        "--no-pretrained",
        "--device",
        "cpu",
        "--data-root",
        three_tasks,
        "--out",
        out,
        "--protocol",
        "paper",
    ]
    result = invoke(*base, "-m", "rlrr", "--epochs", "1", "--set", "cooldown_epochs=0", "--set", "warmup_epochs=0")
    assert result.exit_code == 0, result.output
    (record,) = records(out)
    settings = record.spec.settings
    assert (settings["lr"], settings["weight_decay"], settings["drop_path"], settings["batch_size"]) == (
        2e-3,
        5e-5,
        0.1,
        32,
    )
    assert settings["drop_path_mode"] == "dropout" and record.spec.recipe == "vtab-resize-hflip-half"
    assert record.spec.protocol == "paper"
    # the authors' loop: timm's scheduler stepped per epoch, fp16 autocast with a scaler, RLRR's zero head
    train = record.spec.train  # head_init "zero" is the key-neutral default: typed, not in the flat form
    assert (train.scheduler, train.precision, train.head_init) == ("timm-epoch", "fp16", "zero")
    assert (settings["scheduler"], settings["precision"]) == ("timm-epoch", "fp16") and "head_init" not in settings
    assert record.schedule.scheduler == "timm-epoch" and len(record.schedule.lr_per_epoch) == 1
    assert (record.execution.precision, record.execution.head_init) == ("fp16", "zero")  # named in the record
    assert record.schedule.lr_per_epoch[0] == settings["lr"]  # no warm-up epochs asked for: the first epoch at lr
    refused = invoke(*base, "-m", "vpt_deep")
    assert (
        refused.exit_code == 2
        and "no fixed published settings" in refused.stderr
        and "--protocol tune" in refused.stderr
    )


def test_best_test_records_the_test_curve_and_its_maximum(three_tasks: Path, tmp_path: Path):
    out = tmp_path / "results"
    result = invoke(
        "run",
        "-m",
        "linear",
        "-s",
        "vtab",
        "-t",
        "cifar",
        "--model",
        "vit_micro_patch4_32",
        "--device",
        "cpu",
        "--data-root",
        three_tasks,
        "--out",
        out,
        "--epochs",
        "4",
        "--protocol",
        "best-test",
        "--eval-every",
        "2",
    )
    assert result.exit_code == 0, result.output
    (record,) = records(out)
    metrics = record.metrics
    assert [epoch for epoch, _ in metrics.test_curve] == [2, 4]
    assert metrics.test_curve[-1][1] == metrics.top1  # the last point is the final evaluation
    assert metrics.best_test_top1 == max(top1 for _, top1 in metrics.test_curve)
    assert record.spec.settings["settings_source"] == "default"  # linear has no published settings
