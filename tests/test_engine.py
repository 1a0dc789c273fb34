"""The engine: learning, seeding, schedule, weight-decay groups, cached features, bad losses."""

import math

import pytest
import torch
from conftest import write_vtab_task

from peftbench import backbone
from peftbench.data import load_split
from peftbench.data.recipes import RECIPES
from peftbench.engine import NonFiniteLoss, build_optimizer, train_and_evaluate
from peftbench.methods.full import FullFineTuning
from peftbench.methods.linear import LinearProbing
from peftbench.schedules import learning_rate
from peftbench.settings import TrainConfig
from peftbench.suites import get_suite

VTAB = get_suite("vtab")
RESIZE = RECIPES["vtab-resize"]
FAST = TrainConfig(epochs=6, batch_size=16, lr=1e-3, weight_decay=1e-4, warmup_epochs=1, log_every=4)


@pytest.fixture(scope="module")
def four_colours(tmp_path_factory) -> tuple:
    root = tmp_path_factory.mktemp("vtab")
    write_vtab_task(root, "dtd", {"train800": 64, "val200": 16, "test": 64}, num_classes=4)
    task = VTAB.task("dtd")
    return load_split(VTAB, task, "train800val200", root, 32, RESIZE), load_split(VTAB, task, "test", root, 32, RESIZE)


def _model(method, seed=0, num_classes=4):
    torch.manual_seed(seed)
    model, _ = backbone.create_backbone("vit_micro_patch4_32", num_classes, None)
    method.apply(model)
    model.head.requires_grad_(True)
    return model


def test_full_fine_tuning_learns_a_separable_task(four_colours):
    train, test = four_colours
    method = FullFineTuning()
    model = _model(method)
    result = train_and_evaluate(model, method.no_weight_decay(model), train, test, FAST, torch.device("cpu"), seed=1)
    assert result.top1 >= 95.0  # chance is 25 %
    assert not result.used_cached_features
    assert result.final_train_loss < 0.5


def test_linear_probe_trains_the_head_on_cached_features(four_colours):
    train, test = four_colours
    method = LinearProbing()
    model = _model(method)
    frozen = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("head.")}
    cfg = TrainConfig(epochs=60, batch_size=16, lr=3e-2, warmup_epochs=0, log_every=10)
    result = train_and_evaluate(model, method.no_weight_decay(model), train, test, cfg, torch.device("cpu"), seed=1)
    assert result.used_cached_features
    assert result.top1 >= 60.0  # random-init features carry colour weakly; chance is 25 %
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in frozen.items())
    assert model.head.weight.abs().sum() > 0


def test_same_seed_gives_identical_results_on_cpu(four_colours):
    train, test = four_colours
    cfg = TrainConfig(epochs=2, batch_size=16, warmup_epochs=1, log_every=4)
    results = []
    for _ in range(2):
        method = FullFineTuning()
        model = _model(method, seed=3)
        results.append(
            train_and_evaluate(model, method.no_weight_decay(model), train, test, cfg, torch.device("cpu"), seed=5)
        )
    assert results[0].final_train_loss == results[1].final_train_loss
    assert results[0].top1 == results[1].top1


def test_warmup_then_cosine_schedule():
    cfg = TrainConfig(epochs=10, lr=1.0, warmup_lr=0.0, min_lr=0.0, warmup_epochs=2)
    assert learning_rate(0, 10, cfg) == 0.0
    assert learning_rate(10, 10, cfg) == pytest.approx(0.5)
    assert learning_rate(20, 10, cfg) == pytest.approx(1.0)
    assert learning_rate(60, 10, cfg) == pytest.approx(0.5)
    assert learning_rate(100, 10, cfg) == pytest.approx(0.0, abs=1e-12)


def test_cooldown_epochs_stay_at_min_lr_and_restarts_repeat_the_cosine():
    cooldown = TrainConfig(epochs=10, lr=1.0, min_lr=0.01, warmup_epochs=0, cooldown_epochs=2)
    assert cooldown.total_epochs == 12
    assert [learning_rate(step, 10, cooldown) for step in (100, 110, 119)] == pytest.approx([0.01] * 3)
    restarts = TrainConfig(
        epochs=20, lr=1.0, warmup_lr=0.0, min_lr=0.0, warmup_epochs=2, schedule="cosine-restarts", restart_epochs=5
    )
    assert learning_rate(20, 10, restarts) == pytest.approx(1.0)  # warm-up ends
    assert learning_rate(45, 10, restarts) == pytest.approx(0.5)  # half a period later
    assert learning_rate(70, 10, restarts) == pytest.approx(1.0)  # restarted after 5 epochs


def test_biases_norms_and_tokens_take_no_weight_decay():
    method = FullFineTuning()
    model = _model(method)
    no_decay = method.no_weight_decay(model)
    assert {"cls_token", "pos_embed", "blocks.0.norm1.weight", "blocks.0.attn.qkv.bias", "head.bias"} <= no_decay
    assert "blocks.0.attn.qkv.weight" not in no_decay and "head.weight" not in no_decay
    optimizer = build_optimizer(model, no_decay, FAST, torch.device("cpu"))
    decayed, plain = optimizer.param_groups
    assert decayed["weight_decay"] == FAST.weight_decay and plain["weight_decay"] == 0.0
    assert sum(p.numel() for p in decayed["params"]) + sum(p.numel() for p in plain["params"]) == sum(
        p.numel() for p in model.parameters()
    )


def test_sgd_with_momentum_is_available():
    method = FullFineTuning()
    model = _model(method)
    optimizer = build_optimizer(model, set(), TrainConfig(optimizer="sgd", momentum=0.9), torch.device("cpu"))
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["momentum"] == 0.9


def test_a_diverging_loss_raises(four_colours):
    train, test = four_colours
    method = FullFineTuning()
    model = _model(method)
    cfg = TrainConfig(epochs=2, batch_size=16, lr=1e30, warmup_epochs=0, log_every=2)
    with pytest.raises(NonFiniteLoss, match="training loss became nan"):
        train_and_evaluate(model, set(), train, test, cfg, torch.device("cpu"), seed=0)


@pytest.mark.parametrize("scheduler", ["per-step", "timm-epoch", "timm-train"])
def test_a_run_records_the_lr_of_every_epochs_first_step(four_colours, scheduler: str):
    from peftbench.schedules import lr_per_epoch

    train, test = four_colours
    method = FullFineTuning()
    model = _model(method)
    cfg = TrainConfig(epochs=4, cooldown_epochs=1, batch_size=16, warmup_epochs=2, lr=1e-3, scheduler=scheduler)
    result = train_and_evaluate(model, method.no_weight_decay(model), train, test, cfg, torch.device("cpu"), seed=1)
    assert result.lr_per_epoch == pytest.approx(lr_per_epoch(cfg, steps_per_epoch=len(train) // 16), rel=1e-12)
    assert len(result.lr_per_epoch) == 5


def test_fp16_trains_with_a_grad_scaler_and_learns(four_colours):
    train, test = four_colours
    method = FullFineTuning()
    model = _model(method)
    cfg = TrainConfig(epochs=6, batch_size=16, lr=1e-3, warmup_epochs=1, log_every=4, precision="fp16")
    result = train_and_evaluate(model, method.no_weight_decay(model), train, test, cfg, torch.device("cpu"), seed=1)
    assert result.top1 >= 90.0 and math.isfinite(result.final_train_loss)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast, not half weights


def test_head_init_trunc_normal_is_timms_new_linear_init():
    torch.manual_seed(0)
    model, _ = backbone.create_backbone("vit_micro_patch4_32", 100, None)
    assert not model.head.weight.any() and not model.head.bias.any()  # the default: zero, as RLRR
    backbone.init_head(model, "trunc_normal")
    assert model.head.weight.std().item() == pytest.approx(0.02, rel=0.05) and model.head.weight.abs().max() <= 2.0
    assert not model.head.bias.any()
