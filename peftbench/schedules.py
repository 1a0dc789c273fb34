"""Learning-rate schedules, each with the semantics of the code whose recipe it follows.

`TrainConfig.scheduler` names the semantics:

- `per-step` (peftbench's own): linear warm-up from `warmup_lr` to `lr` over `warmup_epochs`, then a
  cosine to `min_lr` at the end of the nominal epochs (restarting every `restart_epochs` with
  `cosine-restarts`), `min_lr` through the cool-down; the lr changes before every step.
- `timm-epoch` (RLRR's train_vtab.py / train_fgvc.py, NOAH's supernet_train_prompt.py): timm's
  `CosineLRScheduler` built as `timm.scheduler.create_scheduler` builds it from their arguments
  (t_initial = epochs, warm-up `warmup_epochs` from `warmup_lr`, t_in_epochs), stepped
  `scheduler.step(epoch)` after each epoch, so epoch e trains at the schedule's value for e − 1 and
  epochs 0 and 1 both at `warmup_lr`; with `cosine-restarts`, torch's `CosineAnnealingWarmRestarts`
  (T_0 = `restart_epochs`, eta_min = `min_lr`) stepped the same way, epoch 0 at `lr` (RLRR's CUB and
  Stanford Dogs). The lr is constant within an epoch.
- `timm-train` (timm's train.py, which SSF's train.py is): the same timm scheduler stepped
  `scheduler.step(epoch + 1)` after each epoch: epoch e trains at the schedule's value for e.
- `vpt-epoch` (VPT's src/solver/lr_scheduler.py WarmupCosineSchedule, stepped once after each epoch
  by src/engine/trainer.py): epoch e trains at lr · e / warmup_epochs during the warm-up (epoch 0 at
  0), then lr · ½(1 + cos(π (e − warmup_epochs) / (epochs − warmup_epochs))), down to 0; `warmup_lr`
  and `min_lr` play no part.
- `bolts-epoch` (Adapter+'s modeling/adaptermodel.py: Lightning-bolts' LinearWarmupCosineAnnealingLR,
  stepped `scheduler.step(epoch=self.current_epoch)` by Lightning at each epoch's end, its closed form):
  value(k) = warmup_lr + k (lr − warmup_lr) / (warmup_epochs − 1) for k < warmup_epochs, then
  min_lr + ½ (lr − min_lr)(1 + cos(π (k − warmup_epochs) / (epochs − warmup_epochs))); epoch 0 trains at
  value(0) (the scheduler's first lr) and epoch e ≥ 1 at value(e − 1), since Lightning's current epoch
  is still the one that just finished. The lr reaches `lr` at k = warmup_epochs − 1.

Every run records `lr_per_epoch`, the lr of the first training step of each epoch, so a run can be
held against the authors' scheduler (tools/faithfulness/).
"""

from __future__ import annotations

import math
import warnings

import torch
from timm.scheduler import CosineLRScheduler

from .settings import TrainConfig


class Schedule:
    """Sets the optimiser's learning rate: `before_step` before every step, `after_epoch` after every epoch."""

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int):
        self.optimizer, self.cfg, self.steps_per_epoch = optimizer, cfg, steps_per_epoch

    def before_step(self, step: int) -> None:
        pass

    def after_epoch(self, epoch: int) -> None:
        pass

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]


class PerStep(Schedule):
    """peftbench's own schedule (`per-step`), one value per optimiser step."""

    def before_step(self, step: int) -> None:
        lr = learning_rate(step, self.steps_per_epoch, self.cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = lr


class TimmEpochs(Schedule):
    """A timm (or torch) epoch scheduler stepped after each epoch with `epoch + offset`."""

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int, offset: int):
        super().__init__(optimizer, cfg, steps_per_epoch)
        self.offset = offset
        if cfg.schedule == "cosine-restarts":
            self.scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
                optimizer, T_0=cfg.restart_epochs, T_mult=1, eta_min=cfg.min_lr
            )
        else:
            self.scheduler = CosineLRScheduler(
                optimizer, t_initial=cfg.epochs, lr_min=cfg.min_lr, warmup_t=cfg.warmup_epochs,
                warmup_lr_init=cfg.warmup_lr, cycle_limit=1, t_in_epochs=True,
            )  # fmt: skip

    def after_epoch(self, epoch: int) -> None:
        self.scheduler.step(epoch + self.offset)


class VPTEpochs(Schedule):
    """VPT's warm-up cosine as a factor of lr per epoch (torch's LambdaLR, stepped after each epoch)."""

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int):
        super().__init__(optimizer, cfg, steps_per_epoch)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: vpt_factor(epoch, cfg))

    def after_epoch(self, epoch: int) -> None:
        self.scheduler.step()


def vpt_factor(epoch: int, cfg: TrainConfig) -> float:
    """The lr factor of `epoch` in VPT's WarmupCosineSchedule (warm-up from 0, cosine to 0, half a cycle)."""
    if epoch < cfg.warmup_epochs:
        return epoch / max(1, cfg.warmup_epochs)
    progress = (epoch - cfg.warmup_epochs) / max(1, cfg.epochs - cfg.warmup_epochs)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


class BoltsEpochs(Schedule):
    """Lightning-bolts' warm-up cosine in closed form, one value per epoch (torch's LambdaLR over epochs)."""

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int):
        super().__init__(optimizer, cfg, steps_per_epoch)
        factor = (lambda epoch: bolts_lr(max(epoch - 1, 0), cfg) / cfg.lr) if cfg.lr > 0 else (lambda epoch: 0.0)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

    def after_epoch(self, epoch: int) -> None:
        self.scheduler.step()


def bolts_lr(k: int, cfg: TrainConfig) -> float:
    """LinearWarmupCosineAnnealingLR's `_get_closed_form_lr` at last_epoch k (warmup_lr up to lr over
    warmup_epochs − 1 steps, then a cosine from lr at k = warmup_epochs to min_lr at k = epochs)."""
    if k < cfg.warmup_epochs:
        return cfg.warmup_lr + k * (cfg.lr - cfg.warmup_lr) / max(1, cfg.warmup_epochs - 1)
    progress = (k - cfg.warmup_epochs) / max(1, cfg.epochs - cfg.warmup_epochs)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1.0 + math.cos(math.pi * progress))


def make_schedule(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int) -> Schedule:
    if cfg.scheduler == "per-step":
        return PerStep(optimizer, cfg, steps_per_epoch)
    if cfg.scheduler == "vpt-epoch":
        return VPTEpochs(optimizer, cfg, steps_per_epoch)
    if cfg.scheduler == "bolts-epoch":
        return BoltsEpochs(optimizer, cfg, steps_per_epoch)
    return TimmEpochs(optimizer, cfg, steps_per_epoch, offset=0 if cfg.scheduler == "timm-epoch" else 1)


def lr_per_epoch(cfg: TrainConfig, steps_per_epoch: int = 1) -> list[float]:
    """The lr of the first step of every epoch, as a run under `cfg` sets it (no training needed)."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    schedule = make_schedule(optimizer, cfg, steps_per_epoch)
    lrs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns that the optimiser never stepped
        for epoch in range(cfg.total_epochs):
            schedule.before_step(epoch * steps_per_epoch)
            lrs.append(schedule.lr)
            schedule.after_epoch(epoch)
    return lrs


def learning_rate(step: int, steps_per_epoch: int, cfg: TrainConfig) -> float:
    """`per-step`: linear warm-up from `warmup_lr` to `lr`, then cosine decay to `min_lr` at the end of
    the nominal epochs (restarting every `restart_epochs` with `cosine-restarts`); `min_lr` through the
    cool-down epochs."""
    warmup_steps = cfg.warmup_epochs * steps_per_epoch
    if step < warmup_steps:
        return cfg.warmup_lr + (cfg.lr - cfg.warmup_lr) * step / warmup_steps
    if cfg.schedule == "cosine-restarts":
        period = cfg.restart_epochs * steps_per_epoch
        progress = ((step - warmup_steps) % period) / period
    else:
        progress = min(1.0, (step - warmup_steps) / max(1, cfg.epochs * steps_per_epoch - warmup_steps))
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * progress))
