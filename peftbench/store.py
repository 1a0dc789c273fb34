"""Records on disk: one JSON file per unit of work, written atomically, found by the unit's key.

Layout: `<root>/<suite>/<task>/<method>-seed<seed>-<key>.json` for runs and tune finals,
`<root>/<suite>/<task>/tune/<method>-<key>.json` for tune trials. A record is written to a
temporary file in the same folder and renamed into place, so a reader never sees half a record
(a killed writer leaves at most a `.tmp` file, which nothing reads).
"""
from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterator

from .spec import RunSpec

SCHEMA_VERSION = 1


class Store:
    """The records under one results folder."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def path(self, unit: Any) -> Path:
        """Where the record of `unit` lives: a RunSpec (a plain run), a Unit, or a manifest entry."""
        where = _locator(unit)
        folder = self.root / where["suite"] / where["task"]
        if where["kind"] == "trial":
            return folder / "tune" / f"{where['method']}-{where['key']}.json"
        return folder / f"{where['method']}-seed{where['seed']}-{where['key']}.json"

    def get(self, unit: Any) -> dict[str, Any] | None:
        """The record of `unit`, or None when there is none (or it cannot be read)."""
        path = self.path(unit)
        return _read(path) if path.exists() else None

    def put(self, record: dict[str, Any]) -> Path:
        """Write a record atomically (temp file + fsync + rename) and return its path."""
        spec = record["spec"]
        path = self.path({**spec, "key": record["key"], "kind": record.get("kind", "run")})
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, record)
        return path

    def records(self, suite: str | None = None) -> Iterator[dict[str, Any]]:
        """Every readable record (tune trials included), optionally of one suite, in a stable order."""
        base = self.root / suite if suite else self.root
        for path in sorted(base.glob("**/*.json")):
            if any(part.startswith(".") for part in path.relative_to(self.root).parts):
                continue  # sweep manifests and claims live in dot-folders
            record = _read(path)
            if record is not None and record.get("schema") == SCHEMA_VERSION and "spec" in record:
                yield record


def _locator(unit: Any) -> dict[str, Any]:
    if isinstance(unit, RunSpec):
        return {**dataclasses.asdict(unit), "key": unit.key, "kind": "run"}
    if isinstance(unit, dict):
        return unit
    return unit.describe()


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON to `path` so that it is either the old file or the whole new one."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w") as handle:
            json.dump(payload, handle, indent=2, sort_keys=True)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        warnings.warn(f"skipping unreadable record {path}: {exc}")
        return None
