"""Run a sweep's units: plan them, record the session, then pull ready units until none is left.

Any number of workers (threads of this loop in separate processes, on one machine or on Slurm
nodes) may run the same session at once: a unit runs in the worker that claims it, a tune final
only once its trials are settled, and every record lands atomically under its unit's key.
"""
from __future__ import annotations

import dataclasses
import time
from datetime import datetime, timezone
from typing import Any

from . import backbone, engine, manifest, protocols
from .data import prepare_suite_data
from .errors import PeftbenchError
from .protocols import Unit
from .request import RunRequest
from .runner import SplitLoader, base_record, failed, run_spec
from .store import Store

__all__ = ["RunRequest", "SweepListener", "SweepOutcome", "execute", "plan", "open_session", "work"]

POLL_SECONDS = 2.0


@dataclasses.dataclass
class SweepOutcome:
    done: list[Unit] = dataclasses.field(default_factory=list)
    skipped: list[Unit] = dataclasses.field(default_factory=list)
    failed: list[tuple[Unit, str]] = dataclasses.field(default_factory=list)
    skipped_failed: list[tuple[Unit, str]] = dataclasses.field(default_factory=list)  # failed before; no --retry-failed


class SweepListener(engine.SilentListener):
    """Progress of a whole sweep; `run_started` precedes each run's `start`/`advance` calls."""

    def run_skipped(self, unit: Unit) -> None:
        pass

    def run_started(self, unit: Unit) -> None:
        pass

    def run_finished(self, unit: Unit, record: dict[str, Any]) -> None:
        pass


def plan(request: RunRequest) -> list[Unit]:
    """Every unit of the request; settings and weights are checked before anything touches the disk."""
    protocols.plan(request, "")  # settings first: a typo is reported before any weights are looked for
    _, identity = backbone.resolve_weights(request.model, request.weights)
    return protocols.plan(request, identity)


def open_session(request: RunRequest, store: Store, units: list[Unit]) -> manifest.Session:
    """Write the sweep's manifest and a new session holding the units this invocation must do."""
    sweep_id = request.sweep_id()
    manifest.write_manifest(store.root, sweep_id, request.payload(), [u.describe() for u in units])
    todo = [u.key for u in units if _needs_run(store.get(u), request)]
    return manifest.start_session(store.root, sweep_id, request.payload(), todo)


def _needs_run(record: dict[str, Any] | None, request: RunRequest) -> bool:
    if record is None or request.force:
        return True
    return record.get("status") == "failed" and request.retry_failed


def execute(request: RunRequest, store: Store, listener: SweepListener) -> SweepOutcome:
    """Plan, open a session and work it in this process (the local launcher with one worker)."""
    units = plan(request)
    prepare_suite_data(request.suite, request.tasks, request.data_root)
    session = open_session(request, store, units)
    return work(request, store, session, listener, units)


def work(request: RunRequest, store: Store, session: manifest.Session, listener: SweepListener,
         units: list[Unit] | None = None, worker: str = "main") -> SweepOutcome:
    """Pull the session's ready units and run them until every one is settled or held elsewhere."""
    units = units if units is not None else plan(request)
    todo = set(session.todo)
    outcome = SweepOutcome()
    for unit in units:
        if unit.key not in todo:
            note_skipped(outcome, unit, store.get(unit))
            listener.run_skipped(unit)
    pending = [u for u in units if u.key in todo]
    device = engine.resolve_device(request.device)
    splits = SplitLoader(request)
    while pending:
        ran_one, waiting = False, []
        for unit in list(pending):
            if _settled(store.get(unit), session, todo, unit.key):
                pending.remove(unit)  # another worker finished it
                continue
            trial_records = _trial_records(unit, store, session, todo)
            if trial_records is None or not manifest.claim(session, unit.key, worker):
                waiting.append(unit)
                continue
            try:
                listener.run_started(unit)
                record = _run_unit(request, unit, trial_records, splits, device, listener, session, worker)
                store.put(record)
            finally:
                manifest.release(session, unit.key)
            pending.remove(unit)
            ran_one = True
            listener.run_finished(unit, record)
            if record["status"] == "ok":
                outcome.done.append(unit)
            else:
                outcome.failed.append((unit, record["reason"]))
        if pending and not ran_one:
            time.sleep(POLL_SECONDS)  # the rest wait for trials or are held by other workers
    return outcome


def note_skipped(outcome: SweepOutcome, unit: Unit, record: dict[str, Any] | None) -> None:
    """Count a unit this session does not run (a failed one among the skipped failures)."""
    outcome.skipped.append(unit)
    if record and record.get("status") == "failed":
        outcome.skipped_failed.append((unit, record.get("reason", "")))


def _settled(record: dict[str, Any] | None, session: manifest.Session, todo: set[str], key: str) -> bool:
    """True when the unit needs nothing more in this session."""
    if record is None:
        return False
    return key not in todo or record.get("session") == session.id


def _trial_records(unit: Unit, store: Store, session: manifest.Session, todo: set[str]) -> list | None:
    """A final's trial records once all are settled (None while any is not); [] for other units."""
    if unit.kind != "final":
        return []
    records = []
    for key in unit.trials:
        record = store.get({**unit.describe(), "key": key, "kind": "trial"})
        if not _settled(record, session, todo, key):
            return None
        records.append(record)
    return records


def _run_unit(request: RunRequest, unit: Unit, trial_records: list, splits: SplitLoader, device, listener,
              session: manifest.Session, worker: str) -> dict[str, Any]:
    spec, extra = unit.spec, {}
    if unit.kind == "final":
        try:
            spec, extra["selection"] = protocols.final_spec(unit, trial_records)
        except PeftbenchError as exc:
            return _unit_fields(failed(base_record(spec, device), str(exc)), unit, session, worker)
    metric = "val_top1" if unit.kind == "trial" else "test_top1"
    record = run_spec(request, spec, splits(spec), device, listener, metric)
    return _unit_fields({**record, **extra}, unit, session, worker)


def _unit_fields(record: dict[str, Any], unit: Unit, session: manifest.Session, worker: str) -> dict[str, Any]:
    fields = {"key": unit.key, "kind": unit.kind, "session": session.id, "sweep": session.sweep, "worker": worker,
              "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    if unit.kind == "trial":
        fields["grid_point"] = dict(unit.point)
    return {**record, **fields}
