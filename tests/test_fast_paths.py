"""The fast paths give the plain paths' results: cached-feature linear probing, merged
evaluation, the RLRR training kernel, torch.compile; and the bench that measures them."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from conftest import write_vtab_task
from typer.testing import CliRunner

from peftbench import backbone
from peftbench.api import adapt
from peftbench.bench import BenchRow, combine_packed, synthetic_split
from peftbench.cli import app
from peftbench.data import load_split
from peftbench.data.recipes import RECIPES
from peftbench.engine import train_and_evaluate
from peftbench.methods.linear import LinearProbing
from peftbench.methods.lora import LoRA
from peftbench.methods.rlrr import RLRRLinear
from peftbench.params import count_trainable
from peftbench.settings import TrainConfig
from peftbench.suites import get_suite
from peftbench.sweeps.launch import worker_shares

VTAB = get_suite("vtab")
CPU = torch.device("cpu")
MICRO = "vit_micro_patch4_32"


@pytest.fixture(scope="module")
def colours(tmp_path_factory) -> tuple:
    root = tmp_path_factory.mktemp("vtab")
    write_vtab_task(root, "dtd", {"train800": 48, "val200": 16, "test": 48}, num_classes=4)
    task = VTAB.task("dtd")
    resize = RECIPES["vtab-resize"]
    return tuple(load_split(VTAB, task, split, root, 32, resize) for split in ("train800val200", "test"))


def _adapted(method, seed: int = 0):
    torch.manual_seed(seed)
    model, _ = backbone.create_backbone(MICRO, 4, None)
    adapt(model, method)
    return model


def test_cached_feature_linear_probe_equals_the_end_to_end_probe(colours):
    train, test = colours
    cfg = TrainConfig(epochs=5, batch_size=16, lr=3e-2, warmup_epochs=1, log_every=3)
    results, heads = [], []
    for feature_cache in (True, False):
        method = LinearProbing()
        model = _adapted(method)
        results.append(
            train_and_evaluate(
                model, method.no_weight_decay(model), train, test, cfg, CPU, seed=7, feature_cache=feature_cache
            )
        )
        heads.append(model.head.weight.detach().clone())
    cached, direct = results
    assert cached.used_cached_features and not direct.used_cached_features
    assert cached.top1 == direct.top1
    assert cached.final_train_loss == pytest.approx(direct.final_train_loss, rel=1e-4)
    torch.testing.assert_close(heads[0], heads[1], atol=1e-5, rtol=1e-4)
    assert heads[0].abs().sum() > 0


def _train_lora(splits: tuple, lr: float, merged: bool = False, compile: bool = False):
    """A rank-4 LoRA run on the micro ViT, seeded the same every time."""
    train, test = splits
    cfg = TrainConfig(epochs=2, batch_size=16, lr=lr, warmup_epochs=0, log_every=3)
    method = LoRA(rank=4)
    model = _adapted(method)
    return train_and_evaluate(
        model,
        method.no_weight_decay(model),
        train,
        test,
        cfg,
        CPU,
        seed=3,
        merge=method.merge if merged else None,
        compile=compile,
    )


def test_merged_evaluation_equals_unmerged(colours):
    merged = _train_lora(colours, 1e-2, merged=True)
    unmerged = _train_lora(colours, 1e-2)
    assert merged.evaluated_merged and not unmerged.evaluated_merged
    assert merged.top1 == unmerged.top1
    assert merged.final_train_loss == unmerged.final_train_loss


def _reference_rlrr(layer: RLRRLinear, x: torch.Tensor) -> torch.Tensor:
    weight, bias = layer.adapted()
    return F.linear(x, weight, bias)


@pytest.mark.parametrize("groups", [1, 3])
def test_rlrr_kernel_gradients_are_exact(groups: int):
    torch.manual_seed(0)
    layer = RLRRLinear(torch.nn.Linear(8, 6).double(), groups=groups).double()
    x = torch.randn(2, 5, 8, dtype=torch.double, requires_grad=True)
    inputs = (x, layer.s_in, layer.s_out, layer.bias_shift)
    assert torch.autograd.gradcheck(lambda *args: layer(args[0]), inputs)
    out = torch.randn(2, 5, 6, dtype=torch.double)
    fast = torch.autograd.grad(layer(x), inputs, out)
    plain = torch.autograd.grad(_reference_rlrr(layer, x), inputs, out)
    for a, b in zip(fast, plain):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)
    assert layer.layer.weight.grad is None  # the frozen weight never receives a gradient


def test_rlrr_kernel_under_bf16_autocast_matches_linear_under_autocast():
    torch.manual_seed(0)
    layer = RLRRLinear(torch.nn.Linear(64, 48), groups=3)
    x = torch.randn(4, 10, 64, requires_grad=True)
    grads = []
    for forward in (layer, lambda inputs: _reference_rlrr(layer, inputs)):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = forward(x)
        assert y.dtype == torch.bfloat16
        grads.append((y.float(), *torch.autograd.grad(y.float().square().sum(), (x, layer.s_in, layer.s_out))))
    for a, b in zip(*grads):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a, b, atol=1e-2, rtol=1e-2)


def test_compiled_training_matches_eager(colours):
    eager = _train_lora(colours, 1e-3)
    compiled = _train_lora(colours, 1e-3, compile=True)
    assert compiled.compiled and not eager.compiled
    assert compiled.final_train_loss == pytest.approx(eager.final_train_loss, rel=1e-3)
    assert abs(compiled.top1 - eager.top1) <= 100 / len(colours[1])  # at most one image flips


def test_bench_reports_each_method_on_the_harness_paths():
    args = [
        "bench",
        "--device",
        "cpu",
        "--model",
        MICRO,
        "--method",
        "linear",
        "--method",
        "rlrr",
        "--batch-size",
        "8",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--eval-batches",
        "1",
        "--stored-size",
        "16",
        "--suite",
        "vtab",
    ]
    result = CliRunner().invoke(app, args + ["--format", "json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    linear, rlrr = report["rows"]
    for row, name in ((linear, "linear"), (rlrr, "rlrr")):
        expected = count_trainable(name, MICRO, VTAB, {})
        assert row["trainable_without_head"] == expected.without_head
        assert row["trainable"] == expected.without_head + 128 * 100 + 100  # a 100-class head
        assert row["train_images_per_second"] > 0 and row["eval_images_per_second"] > 0 and row["fused_attention"]
        assert row["peak_memory_mb"] is None  # not measured on the CPU
    assert linear["path"] == "cached features" and linear["merged_eval_images_per_second"] is None
    assert rlrr["path"] == "end-to-end" and rlrr["merged_eval_images_per_second"] > 0
    assert report["suite"]["epochs"] == 100 and report["suite"]["minutes"]["rlrr"] > 0
    markdown = CliRunner().invoke(app, args)
    assert markdown.exit_code == 0 and "| rlrr" in markdown.stdout and "merged eval img/s" in markdown.stdout
    assert "vit_micro_patch4_32, random weights, batch 8" in markdown.stdout


def test_bench_rejects_unknown_methods_in_one_line():
    result = CliRunner().invoke(app, ["bench", "--device", "cpu", "--method", "lorra"])
    assert result.exit_code == 2 and "lorra" in result.stderr and "valid" in result.stderr


def test_packed_rates_count_images_over_the_common_span():
    def row(rate: float, start: float, end: float) -> BenchRow:
        return BenchRow("lora", "end-to-end", 10, 5, rate, 100.0, 200.0, 1000.0, True, (start, end))

    # two processes: 100 img/s over [0, 2] and 50 img/s over [1, 3] -> 300 images in 3 s
    (combined,) = combine_packed([[row(100.0, 0.0, 2.0)], [row(50.0, 1.0, 3.0)]])
    assert combined.train_images_per_second == pytest.approx(100.0)
    assert combined.peak_memory_mb == 2000.0 and combined.merged_eval_images_per_second == 200.0
    assert combined.train_window == (0.0, 3.0)


def test_runs_per_gpu_packs_workers_on_the_visible_devices(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    shares = worker_shares(1, [0, 1], runs_per_gpu=2)
    assert [(n, e["CUDA_VISIBLE_DEVICES"]) for n, e in shares] == [
        ("gpu0.0", "0"),
        ("gpu0.1", "0"),
        ("gpu1.0", "1"),
        ("gpu1.1", "1"),
    ]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")  # e.g. a Slurm allocation: indices map onto it
    assert [e["CUDA_VISIBLE_DEVICES"] for _, e in worker_shares(1, [1], runs_per_gpu=2)] == ["5", "5"]
    with pytest.raises(Exception, match="only 2 device"):
        worker_shares(1, [2])
    cpu = worker_shares(2)
    assert [n for n, _ in cpu] == ["cpu0", "cpu1"] and all("OMP_NUM_THREADS" in e for _, e in cpu)


def test_synthetic_split_is_uint8_with_every_class():
    split = synthetic_split(10, 8, 4, seed=1)
    assert split.images.dtype == torch.uint8 and split.images.shape == (10, 3, 8, 8)
    assert set(split.labels.tolist()) == {0, 1, 2, 3}


def test_packed_bench_processes_time_their_steps_together():
    args = [
        "bench",
        "--device",
        "cpu",
        "--model",
        MICRO,
        "--method",
        "lora",
        "--batch-size",
        "4",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--eval-batches",
        "1",
        "--runs-per-gpu",
        "2",
        "--format",
        "json",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    (row,) = report["rows"]
    assert report["runs_per_gpu"] == 2 and row["method"] == "lora" and row["train_images_per_second"] > 0
    assert row["trainable_without_head"] == count_trainable("lora", MICRO, VTAB, {}).without_head
