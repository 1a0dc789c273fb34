"""`peftbench compare`: predictions kept beside each record, paired-bootstrap intervals, McNemar's p,
Holm-corrected wins / ties / losses, on synthetic records and on a real demo sweep."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from record_factory import put_predicted
from typer.testing import CliRunner

from peftbench.cli import app
from peftbench.errors import PeftbenchError
from peftbench.reports.compare import compare, render
from peftbench.store import Store

N = 500


def pair(tmp_path: Path, wrong_b: int, task: str = "textures", seeds=(42,)) -> Store:
    """A right on all N examples; B wrong on the first `wrong_b` of them."""
    store = Store(tmp_path / "results")
    labels = np.arange(N) % 5
    for seed in seeds:
        put_predicted(store, "lora", task, seed, labels, labels)
        put_predicted(store, "linear", task, seed, np.where(np.arange(N) < wrong_b, (labels + 1) % 5, labels), labels)
    return store


def test_predictions_are_kept_beside_the_record_with_their_hash(tmp_path: Path):
    store = pair(tmp_path, 10)
    (record,) = [r for r in store.records("demo") if r.spec.method == "linear"]
    assert record.predictions.file.endswith(".predictions.npz") and len(record.predictions.sha256) == 64
    predicted, labels = store.predictions(record)
    assert (predicted != labels).sum() == 10 and len(labels) == N
    sidecar = store.path(record.locator()).with_name(record.predictions.file)
    payload = bytearray(sidecar.read_bytes())
    payload[-1] ^= 0xFF
    sidecar.write_bytes(bytes(payload))
    with pytest.raises(PeftbenchError, match="its sha256 differs"):
        store.predictions(record)


def test_identical_predictions_give_p_one_and_an_interval_around_zero(tmp_path: Path):
    pair(tmp_path, 0)
    result = compare(tmp_path / "results", "demo", "lora", "linear")
    (task,) = result.tasks
    assert task.difference == 0 and task.low <= 0 <= task.high and task.p_value == 1.0 and task.verdict == "tie"
    assert result.means[0].p_value == 1.0 and result.wins_ties_losses == (0, 1, 0)


def test_a_difference_on_30_percent_of_500_examples_is_significant(tmp_path: Path):
    pair(tmp_path, int(0.3 * N))
    result = compare(tmp_path / "results", "demo", "lora", "linear")
    (task,) = result.tasks
    assert task.difference == pytest.approx(30.0) and task.examples == N
    assert 25 < task.low < 30 < task.high < 35 and task.p_value < 1e-40 and task.verdict == "win"
    reverse = compare(tmp_path / "results", "demo", "linear", "lora")
    assert reverse.tasks[0].verdict == "loss" and reverse.tasks[0].difference == pytest.approx(-30.0)


def test_seeds_pool_holm_corrects_and_the_result_is_deterministic(tmp_path: Path):
    store = pair(tmp_path, 8, "textures", seeds=(42, 44))  # 8 of 1000 pooled: p = 2^-7, Holm x 2
    labels = np.arange(N) % 5
    for task, wrong in (("landcover", 150), ("count", 0), ("position", 3)):
        put_predicted(store, "lora", task, 42, labels, labels)
        put_predicted(store, "linear", task, 42, np.where(np.arange(N) < wrong, (labels + 1) % 5, labels), labels)
    first = compare(tmp_path / "results", "demo", "lora", "linear", resamples=2000, seed=3)
    by_task = {t.task: t for t in first.tasks}
    assert by_task["textures"].examples == 2 * N and by_task["textures"].seeds == (42, 44)
    assert by_task["textures"].p_value == pytest.approx(2 * 0.5**16)  # McNemar: 16 discordant, all one way
    # Holm: landcover (150 one way) x 4, textures x 3, position (p = 2 / 2^3) x 2, count (p = 1) x 1
    holm = {t.task: t.p_holm for t in first.tasks}
    assert holm["landcover"] == pytest.approx(4 * 2 * 0.5**150) and holm["textures"] == pytest.approx(3 * 2 * 0.5**16)
    assert holm["position"] == pytest.approx(0.5) and holm["count"] == 1.0
    assert first.wins_ties_losses == (2, 2, 0)  # textures and landcover
    assert [m.name for m in first.means] == ["Mean (flat)", "Mean of group means"]
    assert render(first) == render(compare(tmp_path / "results", "demo", "lora", "linear", resamples=2000, seed=3))
    assert json.loads(render(first, "json"))["wins_ties_losses"] == [2, 2, 0]


def test_what_cannot_be_compared_is_a_one_line_error(tmp_path: Path):
    store = pair(tmp_path, 5)
    with pytest.raises(PeftbenchError, match="no task of demo has runs of both lora and vpt_deep"):
        compare(tmp_path / "results", "demo", "lora", "vpt_deep")
    (record,) = [r for r in store.records("demo") if r.spec.method == "linear"]
    store.put(dataclasses.replace(record, predictions=None))  # an older record: no predictions kept
    with pytest.raises(PeftbenchError, match="keeps no predictions; rerun it"):
        compare(tmp_path / "results", "demo", "lora", "linear")
    with pytest.raises(PeftbenchError, match="no runs of lora or linear with protocol 'paper'; found: default"):
        compare(tmp_path / "results", "demo", "lora", "linear", protocol="paper")


def test_compare_on_a_real_demo_sweep_prints_intervals_and_p_values(tmp_path: Path):
    out = tmp_path / "results"
    runner = CliRunner()
    run = runner.invoke(app, ["run", "-m", "linear", "-m", "lora", "--suite", "demo", "--task", "count", "--epochs", "1",
                              "--seed", "1", "--seed", "2", "--out", str(out)])  # fmt: skip
    assert run.exit_code == 0, run.output
    shown = runner.invoke(
        app, ["compare", "lora", "linear", "--suite", "demo", "--results", str(out), "--resamples", "1000"]
    )
    assert shown.exit_code == 0, shown.output
    (row,) = [line for line in shown.stdout.splitlines() if line.startswith("| count")]
    assert "[" in row and "| 1,2 |" in row and "| 1,000 |" in row  # 500 test images, two seeds pooled
    assert "wins" in shown.stdout and "McNemar" in shown.stdout
    refused = runner.invoke(app, ["compare", "lora", "nope", "--suite", "demo", "--results", str(out)])
    assert refused.exit_code != 0 and "no task of demo has runs of both lora and nope" in refused.output


def test_report_marks_the_cells_that_differ_significantly_from_the_baseline(tmp_path: Path):
    store = pair(tmp_path, 150, "landcover")  # lora right on all, linear wrong on 150 of 500
    labels = np.arange(N) % 5
    put_predicted(store, "lora", "count", 42, labels, labels)
    put_predicted(store, "linear", "count", 42, labels, labels)  # identical: no mark
    put_predicted(store, "vpt_deep", "count", 42, np.where(np.arange(N) < 100, (labels + 1) % 5, labels), labels)
    runner = CliRunner()
    shown = runner.invoke(
        app, ["report", "--suite", "demo", "--results", str(tmp_path / "results"), "--significance", "linear"]
    )
    assert shown.exit_code == 0, shown.output
    leaderboard = shown.stdout.split("\n\n")[1]  # the accuracy table (the efficiency table has rows too)
    row = {line.split("|")[1].strip(): line for line in leaderboard.splitlines() if line.startswith("| ")}
    assert "100.0 ▲" in row["lora"] and row["lora"].count("▲") == 1 and "▲" not in row["linear"]
    assert "80.0 ▼" in row["vpt_deep"]  # worse than linear on count
    assert "significantly better / worse than linear" in shown.stdout
    shown_as = {}
    for fmt in ("latex", "html", "json"):
        args = ["report", "-s", "demo", "--results", str(tmp_path / "results"), "--significance", "linear", "-f", fmt]
        out = runner.invoke(app, args)
        assert out.exit_code == 0, out.output
        shown_as[fmt] = out.stdout
    assert "100.0 $\\uparrow$" in shown_as["latex"] and "100.0 ▲</strong>" in shown_as["html"]
    assert {"Method": "lora", "column": "landcover", "mark": "▲"} in json.loads(shown_as["json"])["marks"]
    missing = runner.invoke(
        app, ["report", "-s", "demo", "--results", str(tmp_path / "results"), "--significance", "nope"]
    )
    assert missing.exit_code != 0 and "--significance nope: no such row in demo" in missing.output
