"""Protocols: how a run request becomes units of work, each with a stable key.

- `default`: each method's default settings, trained on the suite's train split, test once.
- `paper`: each method's published settings per task (peftbench.sweeps.paper_settings), trained and tested as default.
- `tune`: a grid of trials (train on train800, score val200), then one final run per seed with the
  chosen setting (train800val200, test once). A final waits for its trials.
- `best-test` (opt-in): as `paper` where the method has published settings, else `default`, but
  the test split is evaluated every `eval_every` epochs and the maximum is recorded, labelled
  test-selected; kept apart from the other protocols in every table.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from .. import backbone
from ..data.loading import data_format
from ..data.recipes import get_recipe
from ..errors import PeftbenchError
from ..methods import get_method
from ..record import Record
from ..settings import check_keys, resolve
from ..spec import RunSpec
from ..suites import Task
from . import paper_settings, tuning

VPT_SEEDS = (42, 44, 82, 100, 800)  # VPT's five seeds; `--seeds N` takes the first N


@dataclasses.dataclass(frozen=True)
class Unit:
    """One unit of a sweep: a `run` (default, paper, best-test), a tune `trial` or a tune `final`.

    A final's spec holds the settings before the grid's values are chosen; `trials` are the keys
    of the trial units it waits for and `points` their grid points, in the same order.
    """

    kind: str
    spec: RunSpec
    trials: tuple[str, ...] = ()
    points: tuple[tuple[tuple[str, Any], ...], ...] = ()
    point: tuple[tuple[str, Any], ...] = ()  # a trial's grid point

    @property
    def key(self) -> str:
        if self.kind != "final":
            return self.spec.key
        canonical = json.dumps([self.spec.key, list(self.trials)], separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def label(self) -> str:
        s = self.spec
        if self.kind == "trial":
            shown = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.point)
            return f"{s.suite}/{s.task} {s.method} trial {shown}"
        suffix = " (tune final)" if self.kind == "final" else ""
        return f"{s.suite}/{s.task} {s.method} seed {s.seed}{suffix}"

    def describe(self) -> dict[str, Any]:
        """What a manifest stores of the unit."""
        s = self.spec
        return {
            "key": self.key,
            "kind": self.kind,
            "suite": s.suite,
            "task": s.task,
            "method": s.method,
            "seed": s.seed,
            "protocol": s.protocol,
            "trials": list(self.trials),
        }


def seeds_from(seeds: list[int] | None, count: int | None) -> list[int]:
    """`--seed` values, or the first `--seeds N` of VPT's seeds, or 42."""
    if seeds and count is not None:
        raise PeftbenchError("--seed and --seeds exclude each other; give one")
    if count is not None:
        if not 1 <= count <= len(VPT_SEEDS):
            raise PeftbenchError(f"--seeds must be within 1..{len(VPT_SEEDS)} (VPT's seeds {VPT_SEEDS}), got {count}")
        return list(VPT_SEEDS[:count])
    return list(dict.fromkeys(seeds or [42]))


def plan_units(request, weights_identity: str) -> list[Unit]:
    """Every unit of `request` in task, method, (trials then finals | seed) order (runs sharing one
    training next to each other)."""
    method_classes = [get_method(name) for name in request.methods]
    check_keys({**request.overrides, **(request.grid or {})}, method_classes)
    units: list[Unit] = []
    layout = _data_layout(request)  # once: auto-detection looks through the data root
    for task in request.tasks:
        for cls in method_classes:
            template = dataclasses.replace(_template(request, cls, task, weights_identity), data_layout=layout)
            cls(**template.options)  # the method's own checks (rank >= 1, ...), before anything runs
            if request.protocol == "tune":
                units.extend(_tune_units(request, cls, template))
            else:
                units.extend(Unit("run", dataclasses.replace(template, seed=seed)) for seed in request.seeds)
    return units if request.protocol == "tune" else _shared_trainings_together(units, request.suite)


def _shared_trainings_together(units: list[Unit], suite) -> list[Unit]:
    """The units that train the same model (the same spec but for the task, on tasks reading one training
    list: domain generalisation's test sets) made consecutive, in first-seen order, so that a worker
    trains it once and evaluates it on each (sweeps.runner.TrainedModels); any other order is kept."""

    def training(unit: Unit) -> str:
        spec = unit.spec
        source = suite.task(spec.task).lists.get(spec.train_split) or spec.task
        return json.dumps([spec.flat_without_task(), source], sort_keys=True, default=str)

    first_seen: dict[str, int] = {}
    for unit in units:
        first_seen.setdefault(training(unit), len(first_seen))
    return sorted(units, key=lambda unit: first_seen[training(unit)])


def _template(request, cls: type, task: Task, weights_identity: str) -> RunSpec:
    """The spec of one method on one task under the request's protocol (first seed)."""
    suite, recipe = request.suite, request.recipe or request.suite.recipe
    published: dict[str, Any] = {}
    family = backbone.family_of_model(request.model)
    if request.protocol == "paper" and family != "vit":
        raise PeftbenchError(
            f"--protocol paper: the published recipes are for ViT backbones; '{request.model}' is a {family} "
            "model: use --protocol default or tune"
        )
    if request.protocol in ("paper", "best-test") and family == "vit":
        try:
            found = paper_settings.published(cls.name, suite, task)
            published, recipe = found.settings, request.recipe or found.recipe
        except PeftbenchError:
            if request.protocol == "paper":
                raise
    train, options = resolve(cls, suite.defaults, {**published, **request.overrides})
    best_test = request.protocol == "best-test"
    return RunSpec(
        suite.name,
        task.name,
        cls.name,
        request.model,
        weights_identity,
        request.seeds[0],
        train,
        options,
        protocol=request.protocol,
        train_split=suite.train_split,
        eval_split=suite.eval_split,
        recipe=recipe,
        eval_every=request.eval_every if best_test else 0,
        settings_source=("paper" if published else "default") if best_test else "",
        resize_filter=get_recipe(recipe).filter,
    )


def _data_layout(request) -> str:
    """The layout the request's data is read in, when not the suite's own ("" then): part of the key."""
    layout = data_format(request.suite, request.data_root, request.data_format)
    return "" if layout == request.suite.layout else layout


def _tune_units(request, cls: type, template: RunSpec) -> list[Unit]:
    grid = tuning.method_grid(cls, request.suite, template.settings, request.grid or {})
    per_256 = cls.tune_lr_per_256 and not (request.suite.tune_lr_factors and not request.grid)
    train_split, eval_split = request.suite.tune_splits
    trials = []
    for point in tuning.grid_points(grid):
        spec = template.with_settings(tuning.trial_values(template.settings, point, per_256))
        spec = dataclasses.replace(spec, train_split=train_split, eval_split=eval_split)
        trials.append(Unit("trial", spec, point=tuple(point.items())))
    keys = tuple(t.key for t in trials)
    points = tuple(t.point for t in trials)
    finals = [
        Unit("final", dataclasses.replace(template, seed=seed), trials=keys, points=points) for seed in request.seeds
    ]
    return trials + finals


def final_spec(unit: Unit, trial_records: list[Record]) -> tuple[RunSpec, dict[str, Any]]:
    """The spec a tune final runs with, and the selection it records, from its trials' records."""
    trials = []
    for point, record in zip(unit.points, trial_records):
        entry = {"point": dict(point), "settings": record.spec.settings, "status": record.status, "key": record.key}
        if record.ok:
            entry["val_top1"] = record.metrics.top1
        else:
            entry["reason"] = record.reason
        trials.append(entry)
    best = tuning.choose(trials)
    chosen = {k: best["settings"][k] for k in best["point"]}
    selection = {
        "chosen_point": best["point"],
        "chosen_settings": chosen,
        "val_top1": best["val_top1"],
        "trials": [{k: v for k, v in t.items() if k != "settings"} for t in trials],
    }
    return unit.spec.with_settings(chosen), selection
