"""Expand a run request into RunSpecs, skip the finished ones, run the rest, record each.

A failure in one run (bad data, a non-finite loss, out of memory, any exception) is recorded as
`failed` with its reason and the sweep goes on.
"""
from __future__ import annotations

import dataclasses
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from . import backbone, engine, provenance
from .build import adapt
from .data import load_split, prepare_suite_data
from .data.batches import Split
from .data.recipes import get_recipe
from .errors import PeftbenchError
from .registry import get_method
from .settings import TRAIN_FIELDS, TrainConfig, check_keys, resolve
from .spec import RunSpec
from .store import SCHEMA_VERSION, Store
from .suites import Suite, Task


@dataclasses.dataclass(frozen=True)
class RunRequest:
    """What `peftbench run` was asked to do."""

    suite: Suite
    tasks: list[Task]
    methods: list[str]
    model: str
    weights: str | Path | None  # "default", a file, or None for random init
    seeds: list[int]
    overrides: dict[str, Any]
    data_root: Path
    device: str = "auto"
    force: bool = False
    cache_dir: Path | None = None  # the decode-once cache; None: $PEFTBENCH_CACHE or the user cache folder
    recipe: str | None = None  # preprocessing; None: the suite's


@dataclasses.dataclass
class SweepOutcome:
    done: list[RunSpec] = dataclasses.field(default_factory=list)
    skipped: list[RunSpec] = dataclasses.field(default_factory=list)
    failed: list[tuple[RunSpec, str]] = dataclasses.field(default_factory=list)


class SweepListener(engine.SilentListener):
    """Progress of a whole sweep; `run_started` precedes each run's `start`/`advance` calls."""

    def run_skipped(self, spec: RunSpec) -> None:
        pass

    def run_started(self, spec: RunSpec) -> None:
        pass

    def run_finished(self, spec: RunSpec, record: dict[str, Any]) -> None:
        pass


def plan(request: RunRequest) -> list[RunSpec]:
    """Every run of the request, in task, method, seed order."""
    method_classes = [get_method(name) for name in request.methods]
    check_keys(request.overrides, method_classes)
    settings = {}
    for cls in method_classes:  # settings are checked before anything touches the disk
        train_cfg, options = resolve(cls, request.suite.defaults, request.overrides)
        settings[cls.name] = {**dataclasses.asdict(train_cfg), **options}
    _, identity = backbone.resolve_weights(request.model, request.weights)  # fails once, up front
    suite = request.suite
    specs = []
    for task in request.tasks:
        for cls in method_classes:
            for seed in request.seeds:
                specs.append(RunSpec(suite.name, task.name, cls.name, request.model, identity, seed, settings[cls.name],
                                     train_split=suite.train_split, eval_split=suite.eval_split,
                                     recipe=request.recipe or suite.recipe))
    return specs


def execute(request: RunRequest, store: Store, listener: SweepListener) -> SweepOutcome:
    """Run every planned spec that has no `ok` record yet (all of them with `force`)."""
    specs = plan(request)
    device = engine.resolve_device(request.device)
    prepare_suite_data(request.suite, request.tasks, request.data_root)
    image_size = backbone.model_input_size(request.model)
    outcome = SweepOutcome()
    splits: dict[str, tuple | str] = {}
    for spec in specs:
        existing = store.get(spec)
        if existing and existing.get("status") == "ok" and not request.force:
            outcome.skipped.append(spec)
            listener.run_skipped(spec)
            continue
        listener.run_started(spec)
        if spec.task not in splits:
            splits.clear()  # keep one task's splits in memory at a time
            splits[spec.task] = _load_task(request, spec, image_size)
        record = _run_one(request, spec, splits[spec.task], device, listener)
        store.put(record)
        listener.run_finished(spec, record)
        if record["status"] == "ok":
            outcome.done.append(spec)
        else:
            outcome.failed.append((spec, record["reason"]))
    return outcome


def _load_task(request: RunRequest, spec: RunSpec, image_size: int) -> tuple | str:
    """The train and eval splits of a task from the cache, or the reason they cannot be loaded."""
    task, recipe = request.suite.task(spec.task), get_recipe(spec.recipe)
    try:
        return tuple(load_split(request.suite, task, split, request.data_root, image_size, recipe, request.cache_dir)
                     for split in (spec.train_split, spec.eval_split))
    except PeftbenchError as exc:
        return str(exc)


def _run_one(request: RunRequest, spec: RunSpec, splits, device: torch.device, listener: SweepListener) -> dict[str, Any]:
    record = _base_record(spec, device)
    started = time.perf_counter()
    try:
        if isinstance(splits, str):
            raise PeftbenchError(splits)
        train, test = splits
        record["data"] = {"train_split": spec.train_split, "train_size": len(train), "eval_split": spec.eval_split,
                          "eval_size": len(test), "recipe": get_recipe(spec.recipe).describe(),
                          "fingerprints": {spec.train_split: train.meta.get("source"), spec.eval_split: test.meta.get("source")}}
        result, params = _train(request, spec, train, test, device, listener)
    except (PeftbenchError, engine.NonFiniteLoss) as exc:
        return {**record, "status": "failed", "reason": str(exc), "wall_seconds": time.perf_counter() - started}
    except torch.OutOfMemoryError as exc:
        return {**record, "status": "failed", "reason": f"out of memory: {str(exc).splitlines()[0]}", "wall_seconds": time.perf_counter() - started}
    except Exception as exc:  # keep the sweep going; the record keeps the traceback
        return {
            **record,
            "status": "failed",
            "reason": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(),
            "wall_seconds": time.perf_counter() - started,
        }
    return {
        **record,
        "status": "ok",
        "metrics": {"test_top1": result.top1, "final_train_loss": result.final_train_loss},
        "params": params,
        "timing": {
            "train_seconds": result.train_seconds,
            "train_images_per_second": result.train_images_per_second,
            "eval_seconds": result.eval_seconds,
        },
        "memory": {"peak_mb": result.peak_memory_mb, "measure": result.memory_measure},
        "used_cached_features": result.used_cached_features,
        "evaluated_merged": result.evaluated_merged,
        "wall_seconds": time.perf_counter() - started,
    }


def _train(request: RunRequest, spec: RunSpec, train: Split, test: Split, device: torch.device, listener):
    task = request.suite.task(spec.task)
    method_cls = get_method(spec.method)
    options = {k: v for k, v in spec.settings.items() if k in method_cls.option_fields()}
    train_cfg = TrainConfig(**{k: v for k, v in spec.settings.items() if k in TRAIN_FIELDS})
    engine.seed_everything(spec.seed)  # the method's own initialisation is seeded too
    model, _ = backbone.create_backbone(spec.model, task.num_classes, request.weights)
    method = method_cls(**options)
    adapt(model, method)
    params = count_parameters(model, backbone.head_parameter_names(model))
    merge = method.merge if method.mergeable else None
    result = engine.train_and_evaluate(model, method.no_weight_decay(model), train, test, train_cfg, device, spec.seed,
                                       listener, merge, get_recipe(spec.recipe))
    return result, params


def count_parameters(model: torch.nn.Module, head_names: set[str]) -> dict[str, int]:
    """Trainable parameters with and without the head, and the model's total."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    head = sum(p.numel() for n, p in model.named_parameters() if n in head_names)
    total = sum(p.numel() for p in model.parameters())
    return {"trainable": trainable, "trainable_without_head": trainable - head, "head": head, "total": total}


def _base_record(spec: RunSpec, device: torch.device) -> dict[str, Any]:
    return {
        "schema": SCHEMA_VERSION,
        "key": spec.key,
        "spec": dataclasses.asdict(spec),
        "device": provenance.device_name(device),
        "versions": provenance.versions(),
        "git_commit": provenance.git_commit(),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
