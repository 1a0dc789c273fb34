"""The embedded default: the demo suite through the real loader, on the shipped micro-ViT weights."""

import json

import pytest
from typer.testing import CliRunner

from peftbench import backbone
from peftbench.cli import app
from peftbench.store import Store
from peftbench.suites import get_suite

DEMO = get_suite("demo")


def test_shipped_weights_match_their_recorded_sha256_and_load():
    summary = json.loads(backbone.DEMO_WEIGHTS.with_suffix(".json").read_text())
    assert backbone.DEMO_WEIGHTS.stat().st_size < 5 * 2**20
    assert backbone.file_sha256(backbone.DEMO_WEIGHTS) == summary["sha256"]
    assert summary["command"].startswith("python scripts/pretrain_demo_backbone.py")
    model, identity = backbone.create_backbone("vit_micro_patch4_32", 6, "default")
    assert identity == summary["sha256"] and model.head.out_features == 6


def test_shipped_weights_beat_random_init_in_the_recorded_probe():
    means = json.loads(backbone.DEMO_WEIGHTS.with_suffix(".json").read_text())["linear_probe_mean"]
    assert means["shipped_weights"] > means["random_init"]


@pytest.fixture(scope="module")
def demo_linear_run(tmp_path_factory) -> list[dict]:
    base = tmp_path_factory.mktemp("demo")
    result = CliRunner().invoke(
        app,
        [
            "run",
            "--method",
            "linear",
            "--suite",
            "demo",
            "--device",
            "cpu",
            "--data-root",
            str(base / "data"),
            "--out",
            str(base / "results"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert all((base / "data" / "demo" / t.name / "test.txt").is_file() for t in DEMO.tasks)  # generated on first use
    return list(Store(base / "results").records())


def test_linear_probe_on_shipped_weights_learns_every_demo_task(demo_linear_run):
    assert sorted(r.spec.task for r in demo_linear_run) == sorted(t.name for t in DEMO.tasks)
    for record in demo_linear_run:
        task = DEMO.task(record.spec.task)
        majority = 100 * -(-task.splits["test"] // task.num_classes) / task.splits["test"]  # balanced splits
        assert record.metrics.top1 >= majority + 10, (task.name, record.metrics)
        assert record.spec.weights == backbone.file_sha256(backbone.DEMO_WEIGHTS)
        data = record.data
        assert (data.train_split, data.train_size, data.eval_split, data.eval_size) == (
            "train800val200",
            1000,
            "test",
            500,
        )
        assert data.recipe["name"] == "vtab-resize" and data.fingerprints["test"]["images"] == 500
