"""A request planned: its units (settings and weights checked first) and the session that does them."""

from __future__ import annotations

from .. import backbone
from ..record import Record
from ..store import Store
from . import manifest
from .protocols import Unit, plan_units
from .request import RunRequest


def plan(request: RunRequest) -> list[Unit]:
    """Every unit of the request; settings and weights are checked before anything touches the disk."""
    plan_units(request, "")  # settings first: a typo is reported before any weights are looked for
    _, identity = backbone.resolve_weights(request.model, request.weights)
    return plan_units(request, identity)


def open_session(request: RunRequest, store: Store, units: list[Unit]) -> manifest.Session:
    """Write the sweep's manifest and a new session holding the units this invocation must do."""
    sweep_id = request.sweep_id()
    manifest.write_manifest(store.root, sweep_id, request.payload(), [u.describe() for u in units])
    found = {u.key: store.get(u.describe()) for u in units}
    todo = [u.key for u in units if needs_run(found[u.key], request)]
    replaces = {key: marker(found[key]) for key in todo if found[key] is not None}
    return manifest.start_session(store.root, sweep_id, request.payload(), todo, replaces)


def marker(record: Record) -> str:
    """What tells one record of a unit from another written later: its session and finish time."""
    return f"{record.unit.session if record.unit else ''}|{record.provenance.finished_at}"


def needs_run(record: Record | None, request: RunRequest) -> bool:
    """Units without a record run; with --force all; with --retry-failed the failed ones too."""
    if record is None or request.force:
        return True
    return not record.ok and request.retry_failed
