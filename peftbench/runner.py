"""Run one unit: build the model, train, evaluate, and return its record (never raise).

A failure (bad data, a non-finite loss, out of memory, any exception) becomes a `failed` record
with its reason, so the sweep goes on.
"""
from __future__ import annotations

import dataclasses
import time
import traceback
from datetime import datetime, timezone
from typing import Any

import torch

from . import backbone, engine, provenance
from .build import adapt
from .data import load_split
from .data.batches import Split
from .data.recipes import get_recipe
from .errors import PeftbenchError
from .registry import get_method
from .settings import TRAIN_FIELDS, TrainConfig
from .spec import RunSpec
from .store import SCHEMA_VERSION


class SplitLoader:
    """The (train, eval) splits of the unit at hand, kept while consecutive units share them."""

    def __init__(self, request):
        self.request = request
        self._key: tuple | None = None
        self._value: tuple | str | None = None

    def __call__(self, spec: RunSpec) -> tuple[Split, Split] | str:
        """The splits, or the reason they cannot be loaded."""
        key = (spec.task, spec.train_split, spec.eval_split, spec.recipe, spec.model)
        if key != self._key:
            self._key, self._value = key, None  # one pair in memory at a time
            task, recipe = self.request.suite.task(spec.task), get_recipe(spec.recipe)
            size = backbone.model_input_size(spec.model)
            try:
                self._value = tuple(load_split(self.request.suite, task, split, self.request.data_root, size, recipe,
                                               self.request.cache_dir) for split in (spec.train_split, spec.eval_split))
            except PeftbenchError as exc:
                self._value = str(exc)
        return self._value


def run_spec(request, spec: RunSpec, splits: tuple[Split, Split] | str, device: torch.device,
             listener: engine.Listener, metric: str = "test_top1") -> dict[str, Any]:
    """Train and evaluate `spec`; its record (status ok or failed), without the unit's fields."""
    record = base_record(spec, device)
    started = time.perf_counter()
    try:
        if isinstance(splits, str):
            raise PeftbenchError(splits)
        train, evaluated = splits
        record["data"] = {"train_split": spec.train_split, "train_size": len(train), "eval_split": spec.eval_split,
                          "eval_size": len(evaluated), "recipe": get_recipe(spec.recipe).describe(),
                          "fingerprints": {spec.train_split: train.meta.get("source"),
                                           spec.eval_split: evaluated.meta.get("source")}}
        result, params, fused = _train(request, spec, train, evaluated, device, listener)
    except (PeftbenchError, engine.NonFiniteLoss) as exc:
        return failed(record, str(exc), started)
    except torch.OutOfMemoryError as exc:
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return failed(record, f"out of memory: {str(exc).splitlines()[0]}", started)
    except Exception as exc:  # keep the sweep going; the record keeps the traceback
        return {**failed(record, f"{type(exc).__name__}: {exc}", started), "traceback": traceback.format_exc()}
    metrics = {metric: result.top1, "final_train_loss": result.final_train_loss}
    if result.test_curve:
        best_epoch, best = max(result.test_curve, key=lambda point: (point[1], -point[0]))
        metrics.update(best_test_top1=best, best_test_epoch=best_epoch, test_curve=[list(p) for p in result.test_curve])
    return {
        **record,
        "status": "ok",
        "metrics": metrics,
        "params": params,
        "timing": {
            "train_seconds": result.train_seconds,
            "train_images_per_second": result.train_images_per_second,
            "eval_seconds": result.eval_seconds,
            "eval_images_per_second": result.eval_images_per_second,
        },
        "memory": {"peak_mb": result.peak_memory_mb, "measure": result.memory_measure},
        "used_cached_features": result.used_cached_features,
        "evaluated_merged": result.evaluated_merged,
        "compiled": result.compiled,
        "fused_attention": fused,
        "wall_seconds": time.perf_counter() - started,
    }


def failed(record: dict[str, Any], reason: str, started: float | None = None) -> dict[str, Any]:
    wall = time.perf_counter() - started if started is not None else 0.0
    return {**record, "status": "failed", "reason": reason, "wall_seconds": wall}


def _train(request, spec: RunSpec, train: Split, evaluated: Split, device: torch.device, listener):
    task = request.suite.task(spec.task)
    method_cls = get_method(spec.method)
    options = {k: v for k, v in spec.settings.items() if k in method_cls.option_fields()}
    train_cfg = TrainConfig(**{k: v for k, v in spec.settings.items() if k in TRAIN_FIELDS})
    engine.seed_everything(spec.seed)  # the method's own initialisation is seeded too
    model, _ = backbone.create_backbone(spec.model, task.num_classes, request.weights)
    backbone.set_drop_path(model, train_cfg.drop_path, train_cfg.drop_path_mode)
    method = method_cls(**options)
    adapt(model, method)
    params = count_parameters(model, backbone.head_parameter_names(model))
    merge = method.merge if method.mergeable else None
    result = engine.train_and_evaluate(model, method.no_weight_decay(model), train, evaluated, train_cfg, device,
                                       spec.seed, listener, merge, get_recipe(spec.recipe),
                                       eval_every=spec.settings.get("eval_every", 0), compile=request.compile)
    return result, params, engine.uses_fused_attention(model)


def count_parameters(model: torch.nn.Module, head_names: set[str]) -> dict[str, int]:
    """Trainable parameters with and without the head, and the model's total."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    head = sum(p.numel() for n, p in model.named_parameters() if n in head_names)
    total = sum(p.numel() for p in model.parameters())
    return {"trainable": trainable, "trainable_without_head": trainable - head, "head": head, "total": total}


def base_record(spec: RunSpec, device: torch.device) -> dict[str, Any]:
    return {
        "schema": SCHEMA_VERSION,
        "key": spec.key,
        "kind": "run",
        "spec": dataclasses.asdict(spec),
        "device": provenance.device_name(device),
        "versions": provenance.versions(),
        "git_commit": provenance.git_commit(),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
