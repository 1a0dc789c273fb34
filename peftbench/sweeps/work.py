"""The worker loop: pull a session's ready units and run them until none is left.

Any number of workers (this loop in separate processes, on one machine or on Slurm nodes) may
run the same session at once: a unit runs in the worker that claims it, a tune final only once
its trials are settled, and every record lands atomically under its unit's key.
"""

from __future__ import annotations

import dataclasses
import time
from datetime import datetime, timezone
from typing import Any

from .. import engine
from ..errors import PeftbenchError
from ..record import Record, UnitInfo
from ..store import Store
from . import manifest, protocols
from .plan import marker
from .protocols import Unit
from .request import RunRequest
from .runner import SplitLoader, TrainedModels, failed, new_record, run_spec

POLL_SECONDS = 2.0


@dataclasses.dataclass
class SweepOutcome:
    done: list[Unit] = dataclasses.field(default_factory=list)
    skipped: list[Unit] = dataclasses.field(default_factory=list)
    failed: list[tuple[Unit, str]] = dataclasses.field(default_factory=list)
    skipped_failed: list[tuple[Unit, str]] = dataclasses.field(default_factory=list)  # failed before; no --retry-failed
    submission: Any = None  # the Slurm launcher's job array, when the outcome waited for one
    elsewhere: list[Unit] = dataclasses.field(default_factory=list)  # finished meanwhile by another session

    def skip(self, unit: Unit, record: Record | None) -> None:
        """Count a unit this session does not run (a failed one among the skipped failures)."""
        self.skipped.append(unit)
        if record is not None and not record.ok:
            self.skipped_failed.append((unit, record.reason))


class SweepListener(engine.SilentListener):
    """Progress of a whole sweep; `run_started` precedes each run's `start`/`advance` calls."""

    def run_skipped(self, unit: Unit) -> None:
        pass

    def run_started(self, unit: Unit) -> None:
        pass

    def run_finished(self, unit: Unit, record: Record) -> None:
        pass


def work(
    request: RunRequest,
    store: Store,
    session: manifest.Session,
    listener: SweepListener,
    units: list[Unit],
    worker: str = "main",
) -> SweepOutcome:
    """Pull the session's ready units and run them until every one is settled or held elsewhere."""
    todo = set(session.todo)
    outcome = SweepOutcome()
    for unit in units:
        if unit.key not in todo:
            outcome.skip(unit, store.get(unit.describe()))
            listener.run_skipped(unit)
    pending = [u for u in units if u.key in todo]
    device = engine.resolve_device(request.device)
    splits, trained = SplitLoader(request), TrainedModels()
    while pending:
        ran_one, waiting = False, []
        for unit in list(pending):
            found = store.get(unit.describe())
            if _settled(found, session, todo, unit.key):
                pending.remove(unit)  # another worker, of this session or a concurrent one, finished it
                if found.unit is None or found.unit.session != session.id:
                    outcome.elsewhere.append(unit)
                continue
            trial_records = _trial_records(unit, store, session, todo)
            claimed = None if trial_records is None else manifest.claim(session, unit.key, worker)
            if claimed is None:
                waiting.append(unit)
                continue
            try:
                listener.run_started(unit)
                with manifest.heartbeat(claimed):
                    record = _run_unit(
                        request, unit, trial_records, (splits, trained), device, listener, session, worker
                    )
                store.put(record)
            finally:
                manifest.release(session, unit.key)
            pending.remove(unit)
            ran_one = True
            listener.run_finished(unit, record)
            if record.ok:
                outcome.done.append(unit)
            else:
                outcome.failed.append((unit, record.reason))
        if pending and not ran_one:
            time.sleep(POLL_SECONDS)  # the rest wait for trials or are held by other workers
    return outcome


def _settled(record: Record | None, session: manifest.Session, todo: set[str], key: str) -> bool:
    """True when the unit needs nothing more in this session: it was not to be done, this session did
    it, or another session wrote it meanwhile (it is not the record this session set out to replace),
    so two identical commands run each unit once."""
    if record is None:
        return False
    if key not in todo or (record.unit is not None and record.unit.session == session.id):
        return True
    return marker(record) != session.replaces.get(key)


def _trial_records(unit: Unit, store: Store, session: manifest.Session, todo: set[str]) -> list[Record] | None:
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


def _run_unit(
    request: RunRequest,
    unit: Unit,
    trial_records: list[Record],
    loaders: tuple[SplitLoader, TrainedModels],
    device,
    listener,
    session: manifest.Session,
    worker: str,
) -> Record:
    spec, selection = unit.spec, None
    if unit.kind == "final":
        try:
            spec, selection = protocols.final_spec(unit, trial_records)
        except PeftbenchError as exc:
            return _as_unit(failed(new_record(spec, device), str(exc)), unit, session, worker)
    splits, trained = loaders
    split = "val" if unit.kind == "trial" else "test"
    record = run_spec(request, spec, splits(spec), device, listener, split, trained)
    return _as_unit(dataclasses.replace(record, selection=selection), unit, session, worker)


def _as_unit(record: Record, unit: Unit, session: manifest.Session, worker: str) -> Record:
    """The record under its unit's key and kind, with the session and worker that ran it."""
    finished = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return dataclasses.replace(
        record,
        key=unit.key,
        kind=unit.kind,
        provenance=dataclasses.replace(record.provenance, finished_at=finished),
        unit=UnitInfo(session.id, session.sweep, worker, dict(unit.point) if unit.kind == "trial" else None),
    )
