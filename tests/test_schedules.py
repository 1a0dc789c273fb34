"""Schedules with the authors' semantics, held against the schedulers the authors' code builds and steps.

RLRR's train_vtab.py / train_fgvc.py and NOAH's supernet_train_prompt.py call
`timm.scheduler.create_scheduler(args, optimizer)` and step it `lr_scheduler.step(epoch)` after each
epoch; timm's train.py (SSF) steps `step(epoch + 1)`; RLRR's CUB and Stanford Dogs replace the timm
scheduler by torch's CosineAnnealingWarmRestarts(T_0=5, eta_min=0), stepped `step(epoch)`.
"""

import argparse
import dataclasses
import math
import warnings

import pytest
import torch
from timm.scheduler import create_scheduler

from peftbench.schedules import learning_rate, lr_per_epoch
from peftbench.settings import TrainConfig
from peftbench.suites import get_suite
from peftbench.sweeps.paper_settings import published


def _authors_lrs(lr: float, epochs: int, cooldown: int, offset: int = 0, restarts: int = 0) -> list[float]:
    """The lr each epoch trains at in the authors' loop: read before the epoch, stepped after it."""
    args = argparse.Namespace(sched="cosine", epochs=epochs, warmup_epochs=10, lr_cycle_decay=0.5,
                              cooldown_epochs=cooldown, min_lr=1e-8, warmup_lr=1e-7, lr=lr)  # fmt: skip
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    scheduler, total = create_scheduler(args, optimizer)
    if restarts:  # train_fgvc.py, CUB_200_2011 and StanfordDogs
        scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(optimizer, T_0=restarts, T_mult=1, eta_min=0)
    lrs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns that the optimiser never stepped
        for epoch in range(total):
            lrs.append(optimizer.param_groups[0]["lr"])
            scheduler.step(epoch + offset)
    return lrs


def _paper(method: str, suite: str, task: str, **changes) -> TrainConfig:
    """The TrainConfig `--protocol paper` resolves for a method on a task."""
    from peftbench.methods import get_method
    from peftbench.settings import resolve

    chosen = get_suite(suite)
    found = published(method, chosen, chosen.task(task))
    train, _ = resolve(get_method(method), chosen.defaults, {**found.settings, **changes})
    return train


def _relative(ours: list[float], theirs: list[float]) -> float:
    assert len(ours) == len(theirs)
    return max(abs(a - b) / max(abs(b), 1e-30) for a, b in zip(ours, theirs))


@pytest.mark.parametrize("task, lr", [("cifar", 3e-3), ("dtd", 2e-3)])
def test_rlrr_vtab_paper_lr_per_epoch_is_the_authors_scheduler(task: str, lr: float):
    cfg = _paper("rlrr", "vtab1k", task)
    assert (cfg.scheduler, cfg.precision, cfg.head_init, cfg.lr) == ("timm-epoch", "fp16", "zero", lr)
    ours, theirs = lr_per_epoch(cfg), _authors_lrs(lr, 100, 10)
    assert _relative(ours, theirs) <= 1e-9
    assert ours[0] == ours[1] == 1e-7  # epochs 0 and 1 both at warmup_lr
    assert ours[11] == pytest.approx(0.97553 * lr, rel=1e-4) and max(ours) == ours[11] < lr  # lr itself never
    assert sum(value == 1e-8 for value in ours) == 9


def test_rlrr_fgvc_paper_lr_per_epoch_is_the_authors_scheduler_with_cub_restarts():
    flowers = _paper("rlrr", "fgvc", "OxfordFlowers")
    assert _relative(lr_per_epoch(flowers), _authors_lrs(3e-3, 50, 10)) <= 1e-9
    cub = _paper("rlrr", "fgvc", "CUB_200_2011")
    ours, theirs = lr_per_epoch(cub), _authors_lrs(3e-3, 50, 10, restarts=5)
    assert len(ours) == 60 and _relative(ours, theirs) <= 1e-9
    assert ours[0] == ours[1] == 3e-3 and min(ours) == pytest.approx(0.0955 * 3e-3, rel=1e-3)


def test_ssf_paper_steps_timms_scheduler_as_timms_train_py():
    cfg = _paper("ssf", "vtab1k", "cifar")
    assert (cfg.scheduler, cfg.precision, cfg.head_init) == ("timm-train", "fp16", "trunc_normal")
    assert _relative(lr_per_epoch(cfg), _authors_lrs(cfg.lr, 100, 10, offset=1)) <= 1e-9


def test_noah_baselines_step_per_epoch_in_fp32_for_their_100_epochs():
    for method in ("lora_qkv", "adapter"):
        cfg = _paper(method, "vtab1k", "cifar")
        assert (cfg.scheduler, cfg.precision, cfg.head_init, cfg.total_epochs) == (
            "timm-epoch",
            "fp32",
            "trunc_normal",
            100,
        )


def test_per_step_is_peftbenchs_own_schedule_set_before_every_step():
    cfg = TrainConfig(lr=1.0, min_lr=0.0, warmup_lr=0.0, epochs=10, warmup_epochs=2)
    assert cfg.scheduler == "per-step"
    assert lr_per_epoch(cfg, steps_per_epoch=10) == [learning_rate(10 * e, 10, cfg) for e in range(10)]
    assert lr_per_epoch(dataclasses.replace(cfg, scheduler="timm-epoch"))[:3] == [0.0, 0.0, 0.5]


def test_vpt_epoch_is_vpts_warmup_cosine_stepped_per_epoch():
    """VPT's WarmupCosineSchedule: LambdaLR over epochs, warm-up from 0, cosine to 0, stepped after each epoch."""
    from peftbench.methods import get_method
    from peftbench.settings import resolve

    cfg, _ = resolve(get_method("vpt_deep"), get_suite("vtab1k").defaults, {})
    assert (cfg.scheduler, cfg.epochs, cfg.warmup_epochs) == ("vpt-epoch", 100, 10)
    lrs = lr_per_epoch(cfg)
    assert lrs[0] == 0.0 and lrs[5] == pytest.approx(0.5 * cfg.lr) and lrs[10] == pytest.approx(cfg.lr)
    assert lrs[55] == pytest.approx(0.5 * cfg.lr) and lrs[99] == pytest.approx(
        cfg.lr * 0.5 * (1 + math.cos(math.pi * 89 / 90))
    )


def test_adapter_plus_paper_schedule_is_lightning_bolts_warmup_cosine_stepped_at_epoch_ends():
    """Their LinearWarmupCosineAnnealingLR (warm-up from lr/100 over 9 steps, cosine to lr/1000 at 100),
    stepped `step(epoch=current_epoch)` after each epoch: epoch e ≥ 1 trains at the value for e − 1."""
    cfg = _paper("adapter_plus", "vtab1k", "svhn")
    assert (cfg.scheduler, cfg.precision, cfg.head_init, cfg.batch_size) == ("bolts-epoch", "bf16", "trunc_normal", 64)
    lrs = lr_per_epoch(cfg)
    assert len(lrs) == 100 and lrs[0] == lrs[1] == pytest.approx(1e-5)
    assert lrs[2] == pytest.approx(1e-5 + (1e-3 - 1e-5) / 9)
    assert lrs[10] == lrs[11] == pytest.approx(1e-3)  # reached at k = 9; the cosine starts at k = 10
    k = 98  # epoch 99 trains at the cosine's value for 98
    assert lrs[99] == pytest.approx(1e-6 + 0.5 * (1e-3 - 1e-6) * (1 + math.cos(math.pi * (k - 10) / 90)))
    assert all(a <= b for a, b in zip(lrs[:11], lrs[1:11])) and all(a >= b for a, b in zip(lrs[11:], lrs[12:]))


def test_adapter_plus_schedule_is_also_its_default_and_survives_a_short_run():
    from peftbench.methods import get_method
    from peftbench.settings import resolve

    cfg, _ = resolve(get_method("adapter_plus"), get_suite("demo").defaults, {"epochs": 3, "warmup_epochs": 0})
    assert cfg.scheduler == "bolts-epoch"
    assert lr_per_epoch(cfg) == pytest.approx([1e-3, 1e-3, 1e-6 + 0.5 * (1e-3 - 1e-6) * (1 + math.cos(math.pi / 3))])
    one, _ = resolve(get_method("adapter_plus"), get_suite("demo").defaults, {"epochs": 3, "warmup_epochs": 1})
    assert lr_per_epoch(one) == pytest.approx([1e-5, 1e-5, 1e-3])  # one warm-up epoch: no division by zero
