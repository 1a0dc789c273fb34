"""Record: the result of one unit of work (a run, a tune trial, a tune final), typed.

A record holds everything needed to reproduce a run and to judge it: its spec, status, metrics,
parameter counts, timing, memory, how it executed, the data it read, its provenance, a tune final's
selection and the sweep unit that wrote it. It is the only thing `report` reads.

Frozen dataclasses, not pydantic: records are written by this package and read back by it, so the
checks worth having are the migration's (old formats in, one typed shape out), which are explicit
code either way; dataclasses keep `reports` free of another dependency and of import time.

Formats on disk (`from_json` reads every one of them, `to_json` writes the newest):
- schema 1, first records (commit 3e359cc): flat top-level fields, no `kind`, a spec without
  `recipe` and with fewer settings, no fingerprints or evaluation throughput;
- schema 1 (up to commit d110afe): the same flat layout, with `kind`, sweep fields and the rest;
- schema 2 (`schema_version`): grouped as the fields below.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .errors import PeftbenchError
from .spec import RunSpec

SCHEMA_VERSION = 2
KINDS = ("run", "trial", "final")
STATUSES = ("ok", "failed")


@dataclasses.dataclass(frozen=True)
class Metrics:
    """Top-1 (%) on the split the unit scores (test for runs and finals, val for trials)."""

    top1: float
    split: str = "test"
    final_train_loss: float = float("nan")
    best_test_top1: float | None = None  # best-test protocol: the maximum over the evaluated epochs
    best_test_epoch: int | None = None
    test_curve: tuple[tuple[int, float], ...] = ()  # (epoch, test top-1), best-test only

    @property
    def name(self) -> str:
        return f"{self.split}_top1"


@dataclasses.dataclass(frozen=True)
class Params:
    trainable: int
    trainable_without_head: int
    head: int
    total: int


@dataclasses.dataclass(frozen=True)
class Timing:
    wall_seconds: float = 0.0  # the whole unit, loading included
    train_seconds: float | None = None
    train_images_per_second: float | None = None
    eval_seconds: float | None = None
    eval_images_per_second: float | None = None  # None in records older than the figure


@dataclasses.dataclass(frozen=True)
class Memory:
    peak_mb: float
    measure: str  # "cuda max allocated" or "process max RSS"


@dataclasses.dataclass(frozen=True)
class Execution:
    """How the run executed (not what it is): the fast paths it took."""

    used_cached_features: bool = False
    evaluated_merged: bool = False
    compiled: bool = False
    fused_attention: bool | None = None  # None: not recorded (older records)
    precision: str | None = None  # what `precision` resolved to on the device: fp32, bf16 or fp16 (+ GradScaler)
    head_init: str | None = None  # how the new head started: zero or trunc_normal
    backbone: str | None = None  # family, blocks, input size, prefix tokens, pooling (anatomy.describe)
    trained_with: str | None = None  # the run whose trained model this one evaluated (same training, other test set)


@dataclasses.dataclass(frozen=True)
class DataInfo:
    train_split: str
    train_size: int
    eval_split: str
    eval_size: int
    recipe: dict[str, Any] = dataclasses.field(default_factory=dict)  # the recipe's description
    fingerprints: dict[str, Any] = dataclasses.field(default_factory=dict)  # split -> content fingerprint


@dataclasses.dataclass(frozen=True)
class ScheduleTrace:
    """The schedule a run trained with: its semantics (`TrainConfig.scheduler`), its shape
    (`TrainConfig.schedule`) and the lr of the first training step of every epoch."""

    scheduler: str
    shape: str
    lr_per_epoch: tuple[float, ...] = ()


@dataclasses.dataclass(frozen=True)
class Predictions:
    """The evaluated split's predicted class per example, in a sidecar `.npz` beside the record
    (arrays `predicted` and `labels`, in the split's order); the record holds its name and sha256.
    `arrays` carries (predicted, labels) in memory until the store writes them."""

    split: str
    count: int
    file: str = ""
    sha256: str = ""
    arrays: Any = dataclasses.field(default=None, compare=False, repr=False)

    def stored(self) -> dict[str, Any]:
        return {"split": self.split, "count": self.count, "file": self.file, "sha256": self.sha256}


@dataclasses.dataclass(frozen=True)
class Provenance:
    device: str = "unknown"
    versions: dict[str, str] = dataclasses.field(default_factory=dict)
    git_commit: str | None = None
    finished_at: str = ""


@dataclasses.dataclass(frozen=True)
class UnitInfo:
    """The sweep unit that wrote the record."""

    session: str = ""
    sweep: str = ""
    worker: str = ""
    grid_point: dict[str, Any] | None = None  # tune trials


@dataclasses.dataclass(frozen=True)
class Record:
    key: str
    kind: str
    spec: RunSpec
    status: str
    provenance: Provenance = Provenance()
    reason: str = ""  # failed records
    traceback: str = ""  # failed by an unexpected exception
    metrics: Metrics | None = None  # ok records
    params: Params | None = None
    timing: Timing = Timing()
    memory: Memory | None = None
    execution: Execution | None = None
    schedule: ScheduleTrace | None = None  # ok records since the schedule was recorded
    data: DataInfo | None = None
    selection: dict[str, Any] | None = None  # tune finals: the chosen point and every trial's score
    unit: UnitInfo | None = None
    adapted: dict[str, Any] | None = None  # what the method built, as it describes it (peft: version, tuner, config)
    predictions: Predictions | None = None  # ok records since predictions were kept: the sidecar's name and hash
    schema_version: int = SCHEMA_VERSION

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def locator(self) -> dict[str, Any]:
        """What the store needs to place the record: suite, task, method, seed, key, kind."""
        s = self.spec
        return {
            "suite": s.suite,
            "task": s.task,
            "method": s.method,
            "seed": s.seed,
            "key": self.key,
            "kind": self.kind,
        }

    def to_json(self) -> dict[str, Any]:
        """The newest on-disk form (schema 2)."""
        out: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "key": self.key,
            "kind": self.kind,
            "status": self.status,
            "spec": self.spec.flat(),
        }
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name in out or field.name == "schema_version" or value in (None, ""):
                continue
            if isinstance(value, Predictions):
                out[field.name] = value.stored()
            else:
                out[field.name] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
        return out

    @classmethod
    def from_json(cls, raw: Any, where: str = "record") -> Record:
        """A record of any format peftbench has written; a one-line error for anything else."""
        if not isinstance(raw, dict):
            raise PeftbenchError(f"{where}: expected a JSON object, got {type(raw).__name__}")
        version = raw.get("schema_version", raw.get("schema"))
        if version not in MIGRATIONS and version != SCHEMA_VERSION:
            known = ", ".join(str(v) for v in (*MIGRATIONS, SCHEMA_VERSION))
            raise PeftbenchError(f"{where}: unknown record schema {version!r}; this peftbench reads {known}")
        while version != SCHEMA_VERSION:
            raw, version = MIGRATIONS[version](raw)
        try:
            return _parse(raw)
        except (KeyError, TypeError, ValueError) as exc:
            raise PeftbenchError(f"{where}: not a peftbench record ({type(exc).__name__}: {exc})") from None


def _parse(raw: dict[str, Any]) -> Record:
    def part(kind: type, name: str) -> Any:
        value = raw.get(name)
        return None if value is None else kind(**value)

    metrics = raw.get("metrics")
    if metrics is not None:
        metrics = Metrics(**{**metrics, "test_curve": tuple(tuple(p) for p in metrics.get("test_curve", ()))})
    kind, status = raw.get("kind", "run"), raw["status"]
    if kind not in KINDS or status not in STATUSES:
        raise ValueError(f"kind {kind!r} / status {status!r}; expected one of {KINDS} / {STATUSES}")
    return Record(
        key=raw["key"],
        kind=kind,
        spec=RunSpec.from_flat(raw["spec"]),
        status=status,
        provenance=part(Provenance, "provenance") or Provenance(),
        reason=raw.get("reason", ""),
        traceback=raw.get("traceback", ""),
        metrics=metrics,
        params=part(Params, "params"),
        timing=part(Timing, "timing") or Timing(),
        memory=part(Memory, "memory"),
        execution=part(Execution, "execution"),
        data=part(DataInfo, "data"),
        selection=raw.get("selection"),
        unit=part(UnitInfo, "unit"),
        schedule=_schedule(raw.get("schedule")),
        adapted=raw.get("adapted"),
        predictions=part(Predictions, "predictions"),
    )


def _schedule(raw: dict[str, Any] | None) -> ScheduleTrace | None:
    return None if raw is None else ScheduleTrace(**{**raw, "lr_per_epoch": tuple(raw.get("lr_per_epoch", ()))})


# ------------------------------------------------------------------------------------------ migrations

_V1_EXECUTION = ("used_cached_features", "evaluated_merged", "compiled", "fused_attention")
_V1_PROVENANCE = ("device", "versions", "git_commit", "finished_at")
_V1_UNIT = ("session", "sweep", "worker", "grid_point")


def _from_v1(raw: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """Schema 1 (flat fields, both its variants) to schema 2 (grouped)."""
    out = {
        k: raw[k]
        for k in ("key", "status", "spec", "reason", "traceback", "params", "memory", "data", "selection")
        if k in raw
    }
    out["kind"] = raw.get("kind", "run")
    out["provenance"] = {k: raw[k] for k in _V1_PROVENANCE if k in raw}
    out["timing"] = {**raw.get("timing", {}), "wall_seconds": raw.get("wall_seconds", 0.0)}
    if raw.get("status") == "ok":
        out["execution"] = {k: raw[k] for k in _V1_EXECUTION if k in raw}
    if "session" in raw:
        out["unit"] = {k: raw[k] for k in _V1_UNIT if k in raw}
    if "metrics" in raw:
        metrics = dict(raw["metrics"])
        split = "val" if "val_top1" in metrics else "test"
        out["metrics"] = {"top1": metrics.pop(f"{split}_top1"), "split": split, **metrics}
    return out, 2


MIGRATIONS = {1: _from_v1}  # version -> (record of the next version, that version)
