"""Records on disk: one JSON file per run, written atomically, found by the run's key.

Layout: `<root>/<suite>/<task>/<method>-seed<seed>-<key>.json`. A record is written to a
temporary file in the same folder and renamed into place, so a reader never sees half a record.
"""
from __future__ import annotations

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

    def path(self, spec: RunSpec) -> Path:
        return self.root / spec.suite / spec.task / f"{spec.method}-seed{spec.seed}-{spec.key}.json"

    def get(self, spec: RunSpec) -> dict[str, Any] | None:
        """The record of `spec`, or None when there is none (or it cannot be read)."""
        path = self.path(spec)
        return _read(path) if path.exists() else None

    def put(self, record: dict[str, Any]) -> Path:
        """Write a record atomically (temp file + fsync + rename) and return its path."""
        spec = RunSpec(**record["spec"])
        path = self.path(spec)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, record)
        return path

    def records(self, suite: str | None = None) -> Iterator[dict[str, Any]]:
        """Every readable record, optionally of one suite, in a stable order."""
        base = self.root / suite if suite else self.root
        for path in sorted(base.glob("**/*.json")):
            record = _read(path)
            if record is not None and record.get("schema") == SCHEMA_VERSION:
                yield record


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
