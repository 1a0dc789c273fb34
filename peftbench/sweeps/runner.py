"""Run one spec: build the model, train, evaluate, and return its record (never raise).

A failure (bad data, a non-finite loss, out of memory, any exception) becomes a `failed` record
with its reason, so the sweep goes on.
"""

from __future__ import annotations

import dataclasses
import json
import time
import traceback
from datetime import datetime, timezone

import torch

from .. import anatomy, backbone, engine, provenance
from ..api import adapt
from ..data import load_split
from ..data.batches import Split
from ..data.recipes import get_recipe
from ..errors import PeftbenchError
from ..methods import get_method
from ..params import count_parameters
from ..record import (
    DataInfo,
    Execution,
    Memory,
    Metrics,
    Params,
    Predictions,
    Provenance,
    Record,
    ScheduleTrace,
    Timing,
)
from ..spec import RunSpec


class SplitLoader:
    """The (train, eval) splits of the unit at hand, kept while consecutive units share them."""

    def __init__(self, request):
        self.request = request
        self._key: tuple | None = None
        self._value: tuple | str | None = None

    def __call__(self, spec: RunSpec) -> tuple[Split, Split] | str:
        """The splits, or the reason they cannot be loaded."""
        key = (spec.task, spec.train_split, spec.eval_split, spec.recipe, spec.model, spec.data_layout)
        if key != self._key:
            self._key, self._value = key, None  # one pair in memory at a time
            task, recipe = self.request.suite.task(spec.task), get_recipe(spec.recipe)
            size = backbone.model_input_size(spec.model, self.request.suite.image_size)
            try:
                self._value = tuple(
                    load_split(
                        self.request.suite,
                        task,
                        split,
                        self.request.data_root,
                        size,
                        recipe,
                        self.request.cache_dir,
                        spec.data_layout or "vtab-lists",  # what the key says, not a new auto-detection
                    )
                    for split in (spec.train_split, spec.eval_split)
                )
            except PeftbenchError as exc:
                self._value = str(exc)
            except (
                Exception
            ) as exc:  # a full cache disk, a bad file PIL chokes on: this unit's failure, not the sweep's
                self._value = one_line(exc)
        return self._value


class TrainedModels:
    """The worker's last trained model, kept so that a unit that would train exactly the same model (the
    same spec but for its task and evaluated split, on the same training data) only evaluates it: domain
    generalisation's five test sets share ImageNet's 16-shot training, as NOAH trains once and tests that
    checkpoint on each (configs/*/domain-generalization/slurm_test_imagenet.sh). One model at a time."""

    def __init__(self):
        self._identity: str | None = None
        self._trained: tuple | None = None

    def get(self, identity: str | None) -> tuple | None:
        return self._trained if identity is not None and identity == self._identity else None

    def put(self, identity: str | None, trained: tuple) -> None:
        self._identity, self._trained = (identity, trained) if identity is not None else (None, None)


def training_identity(request, spec: RunSpec, train: Split) -> str | None:
    """What fixes the trained model: the spec without its task and evaluated split, the training split's
    cache key (its list file's digest and decoding) and what the request adds; None when a run's training
    depends on its test set (best-test evaluates it while training) or the split has no key."""
    key = getattr(train, "meta", {}).get("key")
    if spec.eval_every or key is None:
        return None
    extra = {"classes": request.suite.task(spec.task).num_classes, "image_size": request.suite.image_size,
             "compile": request.compile, "weights": str(request.weights)}  # fmt: skip
    return json.dumps({"spec": spec.flat_without_task(), "train": key, **extra}, sort_keys=True, default=str)


def run_spec(
    request,
    spec: RunSpec,
    splits: tuple[Split, Split] | str,
    device: torch.device,
    listener: engine.Listener,
    split: str = "test",
    trained: TrainedModels | None = None,
) -> Record:
    """Train and evaluate `spec`; its record (status ok or failed), scored on `split` (test, or val for trials).
    With `trained`, a model this worker has just trained the same way is evaluated instead of retrained."""
    record = new_record(spec, device)
    started = time.perf_counter()
    try:
        if isinstance(splits, str):
            raise PeftbenchError(splits)
        train, evaluated = splits
        record = dataclasses.replace(
            record,
            data=DataInfo(
                spec.train_split,
                len(train),
                spec.eval_split,
                len(evaluated),
                get_recipe(spec.recipe).describe(),
                {spec.train_split: train.meta.get("source"), spec.eval_split: evaluated.meta.get("source")},
            ),
        )
        identity = training_identity(request, spec, train) if trained is not None else None
        reused = trained.get(identity) if trained is not None else None
        if reused is None:
            if trained is not None:
                trained.put(None, ())  # the previous model leaves the device before this one trains
            result, params, fused, adapted, anatomy_line = _train(request, spec, train, evaluated, device, listener)
            if trained is not None:
                trained.put(identity, (spec.label(), result, params, fused, adapted, anatomy_line))
            trained_with = None
        else:
            trained_with, result, params, fused, adapted, anatomy_line = reused
            result = _evaluated_again(result, evaluated)
    except (PeftbenchError, engine.NonFiniteLoss) as exc:
        return failed(record, str(exc), started)
    except torch.OutOfMemoryError as exc:
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return failed(record, f"out of memory: {str(exc).splitlines()[0]}", started)
    except Exception as exc:  # keep the sweep going; the record keeps the traceback
        return dataclasses.replace(failed(record, one_line(exc), started), traceback=traceback.format_exc())
    metrics = Metrics(result.top1, split, result.final_train_loss)
    if result.test_curve:
        best_epoch, best = max(result.test_curve, key=lambda point: (point[1], -point[0]))
        metrics = dataclasses.replace(
            metrics, best_test_top1=best, best_test_epoch=best_epoch, test_curve=result.test_curve
        )
    return dataclasses.replace(
        record,
        status="ok",
        metrics=metrics,
        params=params,
        timing=Timing(
            time.perf_counter() - started,
            None if trained_with else result.train_seconds,  # the training is the other record's
            None if trained_with else result.train_images_per_second,
            result.eval_seconds,
            result.eval_images_per_second,
        ),
        memory=Memory(result.peak_memory_mb, result.memory_measure),
        execution=Execution(
            result.used_cached_features,
            result.evaluated_merged,
            result.compiled,
            fused,
            engine.precision_name(spec.train.precision, device),
            spec.train.head_init,
            anatomy_line,
            trained_with,
        ),
        schedule=ScheduleTrace(spec.train.scheduler, spec.train.schedule, result.lr_per_epoch),
        adapted=adapted,
        predictions=_predictions(split, result.predictions, evaluated),
    )


def _evaluated_again(result: engine.TrainResult, evaluated: Split) -> engine.TrainResult:
    """The trained model's result with its evaluation on `evaluated` instead of the split it was tested on."""
    top1, predicted, seconds = result.evaluator.evaluate(evaluated)
    rate = len(evaluated) / seconds if seconds > 0 else float("inf")
    return dataclasses.replace(
        result, top1=top1, predictions=predicted.cpu(), eval_seconds=seconds, eval_images_per_second=rate
    )


def _predictions(split: str, predicted: torch.Tensor | None, evaluated: Split) -> Predictions | None:
    """The evaluated split's predictions and labels, for the store to keep beside the record."""
    if predicted is None:
        return None
    arrays = (predicted.cpu().numpy().astype("int32"), evaluated.labels.cpu().numpy().astype("int32"))
    return Predictions(split, len(evaluated), arrays=arrays)


def one_line(exc: BaseException) -> str:
    """An exception as one line: its type and the first line of its message."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def failed(record: Record, reason: str, started: float | None = None) -> Record:
    wall = time.perf_counter() - started if started is not None else 0.0
    return dataclasses.replace(record, status="failed", reason=reason, timing=Timing(wall))


def _train(request, spec: RunSpec, train: Split, evaluated: Split, device: torch.device, listener):
    task = request.suite.task(spec.task)
    engine.seed_everything(spec.seed)  # the method's own initialisation is seeded too
    model, _ = backbone.create_backbone(spec.model, task.num_classes, request.weights, request.suite.image_size)
    described = anatomy.describe(model)
    backbone.init_head(model, spec.train.head_init)
    backbone.set_drop_path(model, spec.train.drop_path, spec.train.drop_path_mode)
    method = get_method(spec.method)(**spec.options)
    adapt(model, method)
    params = Params(**count_parameters(model, backbone.head_parameter_names(model)))
    adapted = method.describe_adapted(model)
    merge = method.merge if method.mergeable else None
    result = engine.train_and_evaluate(
        model,
        method.no_weight_decay(model),
        train,
        evaluated,
        spec.train,
        device,
        spec.seed,
        listener,
        merge,
        get_recipe(spec.recipe),
        eval_every=spec.eval_every,
        compile=request.compile,
    )
    return result, params, engine.uses_fused_attention(model), adapted, described


def new_record(spec: RunSpec, device: torch.device) -> Record:
    """A failed-until-finished record of `spec` with its provenance."""
    finished = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return Record(
        spec.key,
        "run",
        spec,
        "failed",
        Provenance(provenance.device_name(device), provenance.versions(), provenance.git_commit(), finished),
    )
