"""Training settings: the engine's defaults, layered with suite, method and command-line values.

Order (later wins): TrainConfig defaults < suite `[defaults]` < method `train_defaults`
< `--epochs` / `--batch-size` < `--set key=value`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from .errors import PeftbenchError


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything the engine needs to train and evaluate one run."""

    epochs: int = 100
    batch_size: int = 64
    optimizer: str = "adamw"  # adamw | sgd
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9  # sgd only
    warmup_epochs: int = 10
    warmup_lr: float = 1e-6
    min_lr: float = 1e-8
    cooldown_epochs: int = 0  # extra epochs at min_lr after the cosine (timm's cool-down; RLRR: 10)
    schedule: str = "cosine"  # cosine | cosine-restarts (SGDR, period restart_epochs, after the warm-up)
    restart_epochs: int = 5
    drop_path: float = 0.0  # rate in the last block, rising linearly from 0 in the first
    drop_path_mode: str = "stochastic"  # stochastic (timm's DropPath) | dropout (RLRR's element-wise)
    eval_batch_size: int = 256
    log_every: int = 20  # optimiser steps between reads of the loss and its finiteness flag (one host sync each)
    # Added after the first release; `key_neutral` is the value that reproduces the behaviour from before
    # (left out of the run key at that value, see spec.py).
    scheduler: str = dataclasses.field(default="per-step", metadata={"key_neutral": "per-step"})
    precision: str = dataclasses.field(default="auto", metadata={"key_neutral": "auto"})
    head_init: str = dataclasses.field(default="zero", metadata={"key_neutral": "zero"})

    def __post_init__(self) -> None:
        for name, valid in CHOICES.items():
            if getattr(self, name) not in valid:
                raise PeftbenchError(f"setting '{name}' must be one of {', '.join(valid)}, got '{getattr(self, name)}'")
        for name in ("epochs", "batch_size", "eval_batch_size", "log_every", "restart_epochs"):
            if getattr(self, name) < 1:
                raise PeftbenchError(f"setting '{name}' must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.warmup_epochs <= self.epochs:
            raise PeftbenchError(f"warmup_epochs must be within 0..epochs ({self.epochs}), got {self.warmup_epochs}")
        if self.cooldown_epochs < 0 or not 0 <= self.drop_path < 1:
            raise PeftbenchError("cooldown_epochs must be >= 0 and drop_path within [0, 1)")
        for name in ("lr", "weight_decay", "warmup_lr", "min_lr"):
            if not math.isfinite(getattr(self, name)) or getattr(self, name) < 0:
                raise PeftbenchError(f"setting '{name}' must be a finite number >= 0, got {getattr(self, name)}")
        if not 0 <= self.momentum < 1:
            raise PeftbenchError(f"setting 'momentum' must be within [0, 1), got {self.momentum}")

    @property
    def total_epochs(self) -> int:
        return self.epochs + self.cooldown_epochs


CHOICES = {
    "optimizer": ("adamw", "sgd"),
    "schedule": ("cosine", "cosine-restarts"),
    "drop_path_mode": ("stochastic", "dropout"),
    # per-step: linear warm-up then cosine, set before every step (peftbench's own);
    # timm-epoch: timm's CosineLRScheduler (or, for cosine-restarts, torch's CosineAnnealingWarmRestarts)
    #   stepped `step(epoch)` after each epoch, as RLRR's and NOAH's train loops: epoch e trains at the
    #   schedule's value for e - 1, epochs 0 and 1 at warmup_lr;
    # timm-train: timm's CosineLRScheduler stepped `step(epoch + 1)` after each epoch, as timm's train.py
    #   (SSF): epoch e trains at the schedule's value for e.
    # vpt-epoch: VPT's warm-up cosine (from 0, to 0) stepped once after each epoch (schedules.py)
    # bolts-epoch: Lightning-bolts' LinearWarmupCosineAnnealingLR stepped at each epoch's end, as Adapter+
    "scheduler": ("per-step", "timm-epoch", "timm-train", "vpt-epoch", "bolts-epoch"),
    # auto: bf16 autocast on CUDA, fp32 on the CPU; fp16: fp16 autocast with a GradScaler (RLRR, SSF --amp)
    "precision": ("auto", "fp32", "bf16", "fp16"),
    # zero: weight and bias 0 (RLRR's zero_head); trunc_normal: weight trunc_normal(std 0.02, cut at
    # ±2), bias 0 (timm's ViT init, which SSF's and NOAH's heads start from); linear: nn.Linear's own
    # init (timm 0.4's reset_classifier, which FacT's head starts from)
    "head_init": ("zero", "trunc_normal", "linear"),
}


TRAIN_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def parse_assignments(items: list[str]) -> dict[str, str]:
    """`["lr=1e-3", "rank=4"]` -> `{"lr": "1e-3", "rank": "4"}`; values stay text until typed."""
    parsed: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value or not key.isidentifier():
            raise PeftbenchError(f"malformed --set '{item}': expected key=value, e.g. --set lr=1e-3")
        parsed[key] = value
    return parsed


def coerce(key: str, value: Any, kind: type) -> Any:
    """Convert a text or TOML value to the field's type, or say what was expected."""
    if isinstance(value, str) and kind is bool:
        lowered = value.lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        raise PeftbenchError(f"setting '{key}': expected true or false, got '{value}'")
    try:
        converted = kind(value)
    except (TypeError, ValueError):
        raise PeftbenchError(f"setting '{key}': expected {kind.__name__}, got '{value}'") from None
    if kind is int and isinstance(value, float) and value != converted:
        raise PeftbenchError(f"setting '{key}': expected an integer, got '{value}'")
    return converted


def field_type(field: dataclasses.Field) -> type:
    kind = field.type
    if isinstance(kind, str):  # postponed annotations
        kind = {"int": int, "float": float, "str": str, "bool": bool}[kind]
    return kind


def check_keys(overrides: dict[str, Any], method_classes: list[type]) -> None:
    """Every override must name an engine setting or an option of one of the chosen methods."""
    known = set(TRAIN_FIELDS)
    for cls in method_classes:
        known |= set(cls.option_fields())
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise PeftbenchError(f"unknown setting '{unknown[0]}'; valid settings: {', '.join(sorted(known))}")


def resolve(method_cls: type, suite_defaults: dict, overrides: dict[str, Any]) -> tuple[TrainConfig, dict[str, Any]]:
    """The engine settings and the method options of one run.

    `overrides` holds the command-line values (typed or text); keys the method does not know
    and the engine does not know are ignored here (`check_keys` has vetted them).
    """
    layered = {**suite_defaults, **method_cls.train_defaults, **overrides}
    train = {k: coerce(k, v, field_type(TRAIN_FIELDS[k])) for k, v in layered.items() if k in TRAIN_FIELDS}
    epochs = train.get("epochs", TrainConfig.epochs)
    if "warmup_epochs" not in overrides and train.get("warmup_epochs", TrainConfig.warmup_epochs) > epochs:
        train["warmup_epochs"] = epochs // 10  # a shortened run (e.g. --epochs 1) keeps a 10 % warm-up
    method_fields = method_cls.option_fields()
    options = {k: coerce(k, v, field_type(method_fields[k])) for k, v in overrides.items() if k in method_fields}
    return TrainConfig(**train), {**changed_defaults(method_fields), **options}


def changed_defaults(fields: dict[str, dataclasses.Field]) -> dict[str, Any]:
    """Options whose default no longer reproduces the behaviour runs were keyed with before: those
    that declare a `key_neutral` value (the old behaviour) other than their default. A spec holds
    them like explicit values, so their runs get new keys (spec.py)."""
    return {name: f.default for name, f in fields.items()
            if "key_neutral" in f.metadata and f.default != f.metadata["key_neutral"]}  # fmt: skip
