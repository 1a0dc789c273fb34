"""Fault injection: every fault becomes a failed record or a one-line error, and no unit runs twice.

Each case of issue I: bad data (a decompression bomb, a non-UTF-8 list, a BOM, 16-bit and huge images),
a full cache disk, a store that cannot be written, broken records, late validation, and two identical
commands run at once on one results folder.
"""

import errno
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import write_vtab_task
from PIL import Image
from typer.testing import CliRunner

from peftbench.cli import app
from peftbench.data.images import decode_image
from peftbench.store import Store

MICRO = ["--model", "vit_micro_patch4_32", "--no-pretrained", "--device", "cpu", "--epochs", "1", "--batch-size", "16"]


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def one_line_error(result, code: int, *fragments: str) -> None:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert any(all(f in line for f in fragments) for line in errors), result.stderr


def bomb_task(root: Path) -> None:
    """cifar: one 14000 x 14000 PNG (196 M pixels, a 25 KB file) in its training list."""
    task = write_vtab_task(root, "cifar")
    Image.new("1", (14000, 14000)).save(task / "images" / "train800" / "000003.jpg.png")
    for name in ("train800val200.txt", "train800.txt"):
        lines = (task / name).read_text().splitlines()
        lines[3] = "images/train800/000003.jpg.png 1"
        (task / name).write_text("\n".join(lines) + "\n")


def latin1_task(root: Path) -> None:
    """dtd: one non-UTF-8 byte in its training list, line 2."""
    task = write_vtab_task(root, "dtd", num_classes=3, seed=1)
    lines = (task / "train800val200.txt").read_bytes().splitlines()
    lines[1] = lines[1].replace(b"images/", b"images/\xe9")
    (task / "train800val200.txt").write_bytes(b"\n".join(lines) + b"\n")


def test_a_bomb_image_and_a_non_utf8_list_fail_their_units_and_the_good_task_runs(tmp_path: Path):
    """Issue I, cases 1 and 3 (loading): two failed records with their reasons, one good record, exit 1."""
    root, out = tmp_path / "data", tmp_path / "results"
    bomb_task(root)
    latin1_task(root)
    write_vtab_task(root, "eurosat", num_classes=4, seed=2)
    result = invoke("run", "-m", "linear", "-s", "vtab", "-t", "cifar", "-t", "dtd", "-t", "eurosat", *MICRO,
                    "--data-root", root, "--out", out)  # fmt: skip
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "1 unit(s) finished, 0 skipped, 2 failed" in result.stdout
    by_task = {r.spec.task: r for r in Store(out).records()}
    assert by_task["eurosat"].ok
    assert (
        not by_task["cifar"].ok and "000003.jpg.png has 14000 x 14000 = 196,000,000 pixels" in by_task["cifar"].reason
    )
    assert (
        not by_task["dtd"].ok
        and "dtd/train800val200.txt:2: byte 0xe9 at column 8 is not UTF-8" in by_task["dtd"].reason
    )


def test_data_check_reports_a_non_utf8_list_as_file_line_and_reads_a_bom(tmp_path: Path):
    root = tmp_path / "data"
    latin1_task(root)
    result = invoke("data", "check", "-s", "vtab", "--data-root", root)
    one_line_error(result, 1, "dtd/train800val200.txt:2", "not UTF-8")
    bom = write_vtab_task(tmp_path / "bom", "cifar")
    (bom / "test.txt").write_bytes(b"\xef\xbb\xbf" + (bom / "test.txt").read_bytes())
    run = invoke("run", "-m", "linear", "-s", "vtab", "-t", "cifar", *MICRO, "--data-root", tmp_path / "bom",
                 "--out", tmp_path / "r")  # fmt: skip
    assert run.exit_code == 0, run.output  # the first path is read without the byte-order mark


def test_a_full_cache_disk_fails_the_unit_and_the_sweep_goes_on(tmp_path: Path, monkeypatch):
    import peftbench.data.cache as cache

    root, out = tmp_path / "data", tmp_path / "results"
    write_vtab_task(root, "cifar")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache, "_write_file", full)
    result = invoke("run", "-m", "linear", "-m", "bitfit", "-s", "vtab", "-t", "cifar", *MICRO, "--data-root", root,
                    "--out", out, "--cache-dir", tmp_path / "cache")  # fmt: skip
    assert result.exit_code == 1 and "0 unit(s) finished, 0 skipped, 2 failed" in result.stdout
    reasons = {r.reason for r in Store(out).records()}
    assert reasons == {"OSError: [Errno 28] No space left on device"}


def test_a_store_that_cannot_be_written_stops_with_one_line_and_leaves_no_claim_files(tmp_path: Path, monkeypatch):
    import peftbench.store as store_module

    root, out = tmp_path / "data", tmp_path / "results"
    write_vtab_task(root, "cifar")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store_module, "write_json_atomic", full)
    result = invoke("run", "-m", "linear", "-s", "vtab", "-t", "cifar", *MICRO, "--data-root", root, "--out", out)
    one_line_error(result, 2, f"cannot write records under {out}", "No space left on device")
    assert not [p for p in out.rglob("*") if p.is_file() and p.suffix == ".tmp"]


def test_sweep_files_that_cannot_be_written_are_one_line(tmp_path: Path, monkeypatch):
    import peftbench.sweeps.manifest as manifest

    root, out = tmp_path / "data", tmp_path / "results"
    write_vtab_task(root, "cifar")

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(manifest, "write_json_atomic", read_only)
    result = invoke("run", "-m", "linear", "-s", "vtab", "-t", "cifar", *MICRO, "--data-root", root, "--out", out)
    one_line_error(result, 2, "cannot write the sweep's files under", "Read-only file system")


def test_a_claim_that_cannot_be_linked_leaves_no_temporary_file(tmp_path: Path, monkeypatch):
    from peftbench.sweeps import manifest

    session = manifest.start_session(tmp_path, "sweep", {}, ["unit"])

    def refuse(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(manifest.os, "link", refuse)
    with pytest.raises(Exception, match="cannot write the sweep's files"):
        manifest.claim(session, "unit", "main")
    assert list(session.claims.iterdir()) == []


@pytest.mark.parametrize("content", [b"[1, 2, 3]", b'{"schema_version": 2, "key": "\xff"}', b"\xff\xfe"])
def test_broken_records_are_skipped_by_report_status_and_run(tmp_path: Path, content: bytes):
    root, out = tmp_path / "data", tmp_path / "results"
    write_vtab_task(root, "cifar")
    args = ["run", "-m", "linear", "-s", "vtab", "-t", "cifar", *MICRO, "--data-root", root, "--out", out]
    assert invoke(*args).exit_code == 0
    (out / "vtab1k" / "cifar" / "broken-seed42-0000000000000000.json").write_bytes(content)
    for command in (args, ["report", "-s", "vtab", "--results", out], ["status", "--results", out]):
        result = invoke(*command)
        assert result.exit_code == 0 and "Traceback" not in result.output, result.output


@pytest.mark.parametrize("extra, fragments", [
    (["--set", "lr=nan"], ["setting 'lr' must be a finite number >= 0, got nan"]),
    (["--set", "lr=-1"], ["setting 'lr' must be a finite number >= 0, got -1.0"]),
    (["-m", "lora", "--set", "rank=0"], ["lora: rank must be at least 1, got 0"]),
    (["--device", "cuda"], ["--device cuda requested but torch sees no CUDA device"]),
])  # fmt: skip
def test_bad_settings_and_devices_are_refused_up_front_with_nothing_written(tmp_path: Path, extra, fragments):
    if "cuda" in extra:
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has a CUDA device")
    root, out = tmp_path / "data", tmp_path / "results"
    write_vtab_task(root, "cifar")
    options = [o for o in MICRO if o not in ("--device", "cpu")] if "--device" in extra else MICRO
    result = invoke("run", "-m", "linear", "-s", "vtab", "-t", "cifar", *options, *extra, "--data-root", root,
                    "--out", out)  # fmt: skip
    one_line_error(result, 2, *fragments)
    assert not out.exists()  # no manifest, no session, no record


@pytest.mark.parametrize("name, content, fragment", [
    ("ViT.npz", b"hello, not weights", "not an .npz archive of arrays"),
    ("ViT.pth", b"hello, not weights", "not a torch state dict"),
    ("ViT.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{", "not a valid safetensors file"),
])  # fmt: skip
def test_unreadable_weights_are_refused_once_up_front(tmp_path: Path, name: str, content: bytes, fragment: str):
    root, out = tmp_path / "data", tmp_path / "results"
    write_vtab_task(root, "cifar")
    weights = tmp_path / name
    weights.write_bytes(content)
    options = [o for o in MICRO if o != "--no-pretrained"]
    result = invoke("run", "-m", "all", "-s", "vtab", "-t", "cifar", *options, "--weights", weights,
                    "--data-root", root, "--out", out)  # fmt: skip
    one_line_error(result, 2, f"cannot read weights {weights}", fragment)
    assert "allow_pickle" not in result.stderr and not out.exists()


def test_sixteen_bit_images_are_scaled_not_clipped_and_huge_ones_are_refused(tmp_path: Path):
    ramp = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)  # 0 .. 65520
    path = tmp_path / "ramp16.png"
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode.startswith("I;16")
    rgb = decode_image(path, None)
    assert rgb.shape == (64, 64, 3) and rgb.max() == 255 and (rgb == 255).mean() < 0.01  # PIL's convert: 99.9 %
    np.testing.assert_allclose(rgb[..., 0].astype(float), ramp / 257, atol=0.51)
    huge = tmp_path / "huge.png"
    Image.new("1", (10000, 10000)).save(huge)
    with pytest.raises(Exception, match=r"huge.png has 10000 x 10000 = 100,000,000 pixels, more than the limit"):
        decode_image(huge, None)


def test_records_are_group_readable_and_markdown_escapes_names(tmp_path: Path):
    from record_factory import as_records

    from peftbench.reports.render import render
    from peftbench.suites import get_suite

    store = Store(tmp_path)
    old = os.umask(0o022)
    try:
        raw = {"schema": 1, "status": "ok", "key": "k1", "kind": "run", "metrics": {"test_top1": 50.0},
               "spec": {"suite": "demo", "task": "textures", "method": "my|method*", "model": "m", "weights": "w",
                        "seed": 1, "settings": {}},
               "params": {"trainable": 5, "trainable_without_head": 0}, "device": "cpu | fake <b>"}  # fmt: skip
        (record,) = as_records([raw])
        path = store.put(record)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    from peftbench.reports import build_leaderboard, runs_frame

    markdown = render(build_leaderboard(runs_frame(store.records()), get_suite("demo")), "md")
    row = next(line for line in markdown.splitlines() if line.startswith("| my"))
    assert row.startswith("| my\\|method\\*") and row.count(" | ") + 2 == markdown.splitlines()[2].count("|")
    assert "cpu \\| fake \\<b\\>" in markdown


def test_two_identical_commands_at_once_train_each_unit_once(tmp_path: Path):
    """Issue I, case 2: claims and settled records reach across sessions; count the trainings, not the files."""
    root, out = tmp_path / "data", tmp_path / "results"
    for i, (task, classes) in enumerate((("cifar", 2), ("dtd", 3), ("eurosat", 4))):
        write_vtab_task(root, task, {"train800": 64, "val200": 16, "test": 32}, num_classes=classes, seed=i)
    command = [sys.executable, "-m", "peftbench", "run", "-m", "bitfit", "-m", "lora", "-s", "vtab", "-t", "cifar",
               "-t", "dtd", "-t", "eurosat", *MICRO[:-4], "--epochs", "3", "--batch-size", "16",
               "--data-root", str(root), "--out", str(out), "--cache-dir", str(tmp_path / "cache")]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    processes = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]  # fmt: skip
    outputs = [p.communicate(timeout=300) for p in processes]
    assert all(p.returncode == 0 for p in processes), outputs
    trained = [line.split(":")[0] for _, err in outputs for line in err.splitlines() if line.startswith("ok ")]
    assert len(trained) == 6 == len(set(trained)), trained  # 3 tasks x 2 methods, each trained by one command
    assert len(list(Store(out).records())) == 6
    assert sum("done meanwhile by another session" in out_text for out_text, _ in outputs) >= 1
    sessions = {json.loads(p.read_text())["id"] for p in out.glob(".sweeps/*/sessions/*.json")}
    assert len(sessions) == 2


def test_a_claim_from_another_host_is_live_while_its_heartbeat_is_fresh(tmp_path: Path):
    import time

    from peftbench.sweeps import manifest

    path = tmp_path / "unit.0"
    path.write_text(json.dumps({"host": "another-node", "pid": 1}))
    data = json.loads(path.read_text())
    assert manifest.claim_is_live(data, path)  # beat just now
    stale = time.time() - manifest.LEASE_SECONDS - 1
    os.utime(path, (stale, stale))
    assert not manifest.claim_is_live(data, path)  # no heartbeat for the lease: taken over
    assert manifest.HEARTBEAT_SECONDS * 5 <= manifest.LEASE_SECONDS
