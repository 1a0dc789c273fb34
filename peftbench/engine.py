"""Train and evaluate one run: optimiser, schedule, precision, seeding; the test split once.

The fast path is the default wherever it gives the same result: images stay uint8 until they
reach the device, where they are normalised; bf16 autocast (`precision=auto`) and fused AdamW on CUDA; timm's fused
attention (F.scaled_dot_product_attention) left on; the loss read every `log_every` steps (one
host sync each), never on every step; evaluation in large batches, through the merged plain ViT
when the method folds into the backbone; and when only the head trains on inputs that do not vary
between epochs, the frozen backbone runs once per image and the head trains on cached features.
`compile=True` adds torch.compile of the training forward.
"""

from __future__ import annotations

import math
import random
import resource
import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import numpy as np
import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from .backbone import head_parameter_names, heads, model_input_size_of, normalisation
from .data.batches import BatchMaker, Split
from .data.recipes import RECIPES, Recipe
from .errors import PeftbenchError
from .schedules import make_schedule
from .settings import TrainConfig


class Listener(Protocol):
    """Receives progress; the CLI draws it, tests ignore it."""

    def start(self, total_steps: int) -> None: ...
    def advance(self, steps: int, epoch: int, loss: float | None) -> None: ...


class SilentListener:
    def start(self, total_steps: int) -> None:
        pass

    def advance(self, steps: int, epoch: int, loss: float | None) -> None:
        pass


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite."""


@dataclass(frozen=True)
class TrainResult:
    top1: float
    final_train_loss: float
    train_seconds: float
    train_images_per_second: float
    eval_seconds: float
    peak_memory_mb: float
    memory_measure: str
    used_cached_features: bool
    evaluated_merged: bool
    eval_images_per_second: float = 0.0
    compiled: bool = False
    test_curve: tuple[tuple[int, float], ...] = ()  # (epoch, top-1) every `eval_every` epochs; best-test only
    lr_per_epoch: tuple[float, ...] = ()  # the lr of the first training step of every epoch
    predictions: Any = None  # the final evaluation's predicted class per example (a CPU tensor)
    evaluator: Any = None  # the trained model as an `Evaluator`, to score other splits without retraining


@dataclass
class Evaluator:
    """A trained model's evaluation forward (merged where the method folds; the whole backbone and head
    for a linear probe trained on cached features), to score further splits exactly as the test split."""

    forward: Callable[[torch.Tensor], torch.Tensor]
    recipe: Recipe
    input_size: int
    device: torch.device
    cfg: TrainConfig

    def evaluate(self, split: Split) -> tuple[float, torch.Tensor, float]:
        """(top-1, predicted class per example, seconds) on `split`."""
        started = time.perf_counter()
        batches = BatchMaker(split, self.recipe, self.input_size, self.device, train=False)
        logits = predict(self.forward, batches, len(split), self.cfg.eval_batch_size, self.device, self.cfg.precision)
        predicted = logits.argmax(dim=1)
        return _top1_of(predicted, split), predicted, time.perf_counter() - started


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when present; asking for CUDA without it is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise PeftbenchError("--device cuda requested but torch sees no CUDA device; use --device cpu or auto")
    if name not in ("cpu", "cuda"):
        raise PeftbenchError(f"unknown device '{name}'; valid devices: auto, cpu, cuda")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_optimizer(
    model: nn.Module, no_decay: set[str], cfg: TrainConfig, device: torch.device
) -> torch.optim.Optimizer:
    """AdamW (fused on CUDA) or SGD with momentum over the trainable parameters, two decay groups."""
    decay, plain = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (plain if name in no_decay else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": plain, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    return torch.optim.AdamW(groups, lr=cfg.lr, fused=device.type == "cuda")


class Normalise(nn.Module):
    """uint8 NCHW images -> float, normalised with the backbone's mean and std."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.register_buffer("scale", 1.0 / (255.0 * torch.tensor(std).view(1, -1, 1, 1)))
        self.register_buffer("shift", (torch.tensor(mean) / torch.tensor(std)).view(1, -1, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.float() * self.scale - self.shift


def only_head_trains(model: nn.Module, head_names: set[str]) -> bool:
    return all(name in head_names for name, p in model.named_parameters() if p.requires_grad)


def trains_on_cached_features(model: nn.Module, recipe: Recipe) -> bool:
    """True when only the (single) head trains and the recipe's inputs do not vary between epochs."""
    return len(heads(model)) == 1 and only_head_trains(model, head_parameter_names(model)) and not recipe.augments


def uses_fused_attention(model: nn.Module) -> bool:
    """True when every timm attention module runs F.scaled_dot_product_attention."""
    flags = [m.fused_attn for m in model.modules() if hasattr(m, "fused_attn")]
    return bool(flags) and all(flags)


def images_forward(
    model: nn.Module, normalise: Normalise, compile: bool = False
) -> Callable[[torch.Tensor], torch.Tensor]:
    """uint8 images on the device -> logits, optionally through torch.compile (static shapes:
    one graph for the full batches, one for a short last batch)."""

    def forward(images: torch.Tensor) -> torch.Tensor:
        return model(normalise(images))

    return torch.compile(forward, dynamic=False) if compile else forward


def cached_features(
    model: VisionTransformer,
    normalise: Normalise,
    batches: Batches,
    count: int,
    batch_size: int,
    device: torch.device,
    precision: str = "auto",
) -> torch.Tensor:
    """The frozen backbone's pre-logits features of `count` inputs, once each (linear probing)."""
    model.eval()

    def features(images: torch.Tensor) -> torch.Tensor:
        return model.forward_head(model.forward_features(normalise(images)), pre_logits=True)

    return predict(features, batches, count, batch_size, device, precision)


Batches = Callable[[torch.Tensor], torch.Tensor]  # indices -> model inputs on the device


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of `precision` on `device` (None: fp32, no autocast); `auto` is bf16 on CUDA."""
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def precision_name(precision: str, device: torch.device) -> str:
    """What `precision` means on `device`, as records name it: fp32, bf16 or fp16 (with a GradScaler)."""
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[autocast_dtype(precision, device)]


def autocast(precision: str, device: torch.device) -> torch.autocast:
    dtype = autocast_dtype(precision, device)
    return torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


@dataclass(frozen=True)
class Fitted:
    last_loss: float  # the mean loss of the last logged steps
    lr_per_epoch: tuple[float, ...]  # the lr of the first step of every epoch


def fit(
    forward: Callable[[torch.Tensor], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    batches: Batches,
    labels: torch.Tensor,
    cfg: TrainConfig,
    device: torch.device,
    listener: Listener,
    after_epoch: Callable[[int], None] | None = None,
) -> Fitted:
    """Train for `cfg.total_epochs` epochs over shuffled mini-batches under `cfg.scheduler`'s schedule
    and `cfg.precision` (fp16 with a `torch.amp.GradScaler`, as the authors' NativeScaler).

    The loss is summed on the device; a NaN or infinity anywhere in the sum poisons it, so the
    read every `log_every` steps (the loop's only host sync) also checks every step's finiteness.
    """
    labels = labels.to(device)
    steps_per_epoch = math.ceil(len(labels) / cfg.batch_size)
    total_steps = cfg.total_epochs * steps_per_epoch
    listener.start(total_steps)
    schedule = make_schedule(optimizer, cfg, steps_per_epoch)
    scaler = torch.amp.GradScaler(device.type, enabled=autocast_dtype(cfg.precision, device) == torch.float16)
    loss_sum = torch.zeros((), device=device)
    logged_steps, last_loss, step, lrs = 0, float("nan"), 0, []
    for epoch in range(cfg.total_epochs):
        order = torch.randperm(len(labels)).to(device)
        for start in range(0, len(labels), cfg.batch_size):
            index = order[start : start + cfg.batch_size]
            schedule.before_step(step)
            if start == 0:
                lrs.append(schedule.lr)
            with autocast(cfg.precision, device):
                logits = forward(batches(index))
            loss = nn.functional.cross_entropy(logits.float(), labels[index])
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            loss_sum += loss.detach()
            logged_steps += 1
            step += 1
            if step % cfg.log_every == 0 or step == total_steps:
                last_loss = (loss_sum / logged_steps).item()
                if not math.isfinite(last_loss):
                    raise NonFiniteLoss(f"training loss became {last_loss} in epoch {epoch + 1} (step {step})")
                loss_sum.zero_()
                listener.advance(logged_steps, epoch + 1, last_loss)
                logged_steps = 0
        schedule.after_epoch(epoch)
        if after_epoch is not None:
            after_epoch(epoch + 1)
    return Fitted(last_loss, tuple(lrs))


@torch.no_grad()
def predict(
    forward: Callable[[torch.Tensor], torch.Tensor],
    batches: Batches,
    count: int,
    batch_size: int,
    device: torch.device,
    precision: str = "auto",
) -> torch.Tensor:
    """Outputs of `forward` over `count` inputs in large batches (under `precision`), gathered on the CPU.

    The outputs stay on the device until the last batch: no per-batch synchronisation, so the host
    gathers batch i + 1 while the device still computes batch i."""
    outputs = []
    for start in range(0, count, batch_size):
        index = torch.arange(start, min(start + batch_size, count))
        with autocast(precision, device):
            outputs.append(forward(batches(index)).float())
    return torch.cat(outputs).cpu()


def _peak_memory(device: torch.device) -> tuple[float, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda max allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "process max RSS"


def train_and_evaluate(
    model: VisionTransformer,
    no_decay: set[str],
    train: Split,
    test: Split,
    cfg: TrainConfig,
    device: torch.device,
    seed: int,
    listener: Listener | None = None,
    merge: Callable[[nn.Module], nn.Module] | None = None,
    recipe: Recipe = RECIPES["vtab-resize"],
    eval_every: int = 0,
    compile: bool = False,
    feature_cache: bool = True,
) -> TrainResult:
    """Train `model` (its trainable parameters as the method left them) on `train` and evaluate
    `test` once, after the last epoch — through `merge(model)`, a plain ViT, when the method folds
    into the backbone. Inputs are prepared on the device as `recipe` says.

    `eval_every=k` (the opt-in best-test protocol only) also evaluates `test` every k epochs, into
    `test_curve`; that time is left out of `train_seconds`. `feature_cache=False` turns off the
    cached-feature path of linear probing (for comparisons); `compile` compiles the training forward."""
    listener = listener or SilentListener()
    seed_everything(seed)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    model.to(device)
    normalise = Normalise(*(recipe.mean_std or normalisation(model))).to(device)
    optimizer = build_optimizer(model, no_decay, cfg, device)
    size = model_input_size_of(model)
    train_batches = BatchMaker(train, recipe, size, device, train=True, resident=True)
    test_batches = BatchMaker(test, recipe, size, device, train=False)
    cached = feature_cache and trains_on_cached_features(model, recipe)
    started = time.perf_counter()
    if cached:  # the frozen backbone runs once per image; the head trains on its features
        train_batches = (
            cached_features(model, normalise, train_batches, len(train), cfg.eval_batch_size, device, cfg.precision)
            .to(device)
            .__getitem__
        )
        test_batches = _lazy_features(
            model, normalise, test_batches, len(test), cfg.eval_batch_size, device, cfg.precision
        )
        forward = model.get_classifier()
    else:
        model.train()
        forward = images_forward(model, normalise, compile)

    curve: list[tuple[int, float]] = []
    curve_seconds = 0.0

    def evaluate_during_training(epoch: int) -> None:
        nonlocal curve_seconds
        if not eval_every or epoch % eval_every or epoch == cfg.total_epochs:
            return  # the last epoch is the final evaluation below
        began = time.perf_counter()
        model.eval()
        logits = predict(forward, test_batches, len(test), cfg.eval_batch_size, device, cfg.precision)
        curve.append((epoch, _top1(logits, test)))
        model.train(not cached)
        curve_seconds += time.perf_counter() - began

    fitted = fit(forward, optimizer, train_batches, train.labels, cfg, device, listener, evaluate_during_training)
    train_seconds = time.perf_counter() - started - curve_seconds
    merged = merge is not None and not cached
    model.eval()
    if merged:
        forward = images_forward(merge(model).eval(), normalise)
    elif not cached:
        forward = images_forward(model, normalise)  # eager: a one-pass evaluation does not repay compiling
    evaluator = Evaluator(forward if not cached else images_forward(model, normalise), recipe, size, device, cfg)
    started = time.perf_counter()
    predicted = predict(forward, test_batches, len(test), cfg.eval_batch_size, device, cfg.precision).argmax(dim=1)
    top1 = _top1_of(predicted, test)
    if eval_every:
        curve.append((cfg.total_epochs, top1))
    eval_seconds = time.perf_counter() - started
    peak, measure = _peak_memory(device)
    return TrainResult(
        top1=top1,
        final_train_loss=fitted.last_loss,
        train_seconds=train_seconds,
        train_images_per_second=cfg.total_epochs * len(train) / train_seconds,
        eval_seconds=eval_seconds,
        peak_memory_mb=peak,
        memory_measure=measure,
        used_cached_features=cached,
        evaluated_merged=merged,
        eval_images_per_second=len(test) / eval_seconds if eval_seconds > 0 else float("inf"),
        compiled=compile and not cached,
        test_curve=tuple(curve),
        lr_per_epoch=fitted.lr_per_epoch,
        predictions=predicted.cpu(),
        evaluator=evaluator,
    )


def _lazy_features(
    model: VisionTransformer,
    normalise: Normalise,
    batches: Batches,
    count: int,
    batch_size: int,
    device: torch.device,
    precision: str = "auto",
) -> Batches:
    """Batches of the test split's cached features, extracted on first use (so at evaluation time)."""
    held: list[torch.Tensor] = []

    def batch(index: torch.Tensor) -> torch.Tensor:
        if not held:
            held.append(cached_features(model, normalise, batches, count, batch_size, device, precision))
        return held[0][index].to(device)

    return batch


def _top1(logits: torch.Tensor, split: Split) -> float:
    return _top1_of(logits.argmax(dim=1), split)


def _top1_of(predicted: torch.Tensor, split: Split) -> float:
    return (predicted == split.labels).sum().item() * 100 / len(split.labels)
