"""`peftbench status`: done / failed / running / pending units per method and task, from the
sweeps' manifests and the records (a unit is running while a live process claims it)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..errors import PeftbenchError
from ..store import Store
from ..suites import get_suite
from .manifest import live_claims, manifests

STATES = ("done", "failed", "running", "pending")


def sweep_states(results: Path, suite: str | None = None) -> pd.DataFrame:
    """`unit_states` of a results folder, or a one-line error when it holds no sweep (of `suite`)."""
    name = get_suite(suite).name if suite else None
    if not results.is_dir():
        raise PeftbenchError(f"results folder {results} does not exist; run `peftbench run` first or pass --results")
    units = unit_states(results, name)
    if units.empty:
        raise PeftbenchError(f"no sweep manifests under {results}/.sweeps" + (f" for suite {name}" if name else ""))
    return units


def unit_states(root: Path, suite: str | None = None) -> pd.DataFrame:
    """One row per unit of every sweep under `root` (a unit in several sweeps counts once)."""
    store = Store(root)
    rows, held = {}, live_claims(root)
    for sweep in manifests(root):
        for unit in sweep["units"]:
            if suite and unit["suite"] != suite:
                continue
            record = store.get(unit)
            if record is not None:
                state = "done" if record.ok else "failed"
            else:
                state = "running" if unit["key"] in held else "pending"
            rows[unit["key"]] = {
                **{k: unit[k] for k in ("suite", "task", "method", "protocol", "kind")},
                "state": state,
            }
    columns = ["suite", "task", "method", "protocol", "kind", "state"]
    return pd.DataFrame(list(rows.values()), columns=columns)


def summarise(units: pd.DataFrame) -> pd.DataFrame:
    """Counts of each state per (suite, method, protocol, task), with a total column."""
    counts = (
        units.groupby(["suite", "method", "protocol", "task", "state"], sort=False)
        .size()
        .unstack("state", fill_value=0)
    )
    counts = counts.reindex(columns=list(STATES), fill_value=0)
    counts["total"] = counts.sum(axis=1)
    return counts.reset_index()
