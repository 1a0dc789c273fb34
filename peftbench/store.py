"""Records on disk: one JSON file per unit of work, written atomically, found by the unit's key.

Layout: `<root>/<suite>/<task>/<method>-seed<seed>-<key>.json` for runs and tune finals,
`<root>/<suite>/<task>/tune/<method>-<key>.json` for tune trials. A record is written to a
temporary file in the same folder and renamed into place, so a reader never sees half a record
(a killed writer leaves at most a `.tmp` file, which nothing reads). Records of every format
peftbench has written are read (`Record.from_json` migrates them); none is rewritten in place.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Iterator

from .atomic import write_json_atomic
from .errors import PeftbenchError
from .record import Record


class Store:
    """The records under one results folder."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def path(self, where: dict[str, Any]) -> Path:
        """Where a record lives, from its locator: suite, task, method, seed, key and kind."""
        folder = self.root / where["suite"] / where["task"]
        if where["kind"] == "trial":
            return folder / "tune" / f"{where['method']}-{where['key']}.json"
        return folder / f"{where['method']}-seed{where['seed']}-{where['key']}.json"

    def get(self, where: dict[str, Any]) -> Record | None:
        """The record at a locator (a unit's `describe()`), or None when there is none or it cannot be read."""
        path = self.path(where)
        return _read(path) if path.exists() else None

    def put(self, record: Record) -> Path:
        """Write a record atomically (temp file + fsync + rename) and return its path; a store that cannot
        be written is a one-line PeftbenchError (the one fault that stops a sweep)."""
        path = self.path(record.locator())
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(path, record.to_json())
        except OSError as exc:  # the store itself is broken (read-only, full): nothing more can be recorded
            raise PeftbenchError(f"cannot write records under {self.root}: {exc.strerror or exc} ({path})") from None
        return path

    def records(self, suite: str | None = None) -> Iterator[Record]:
        """Every readable record (tune trials included), optionally of one suite, in a stable order."""
        base = self.root / suite if suite else self.root
        for path in sorted(base.glob("**/*.json")):
            if any(part.startswith(".") for part in path.relative_to(self.root).parts):
                continue  # sweep manifests and claims live in dot-folders
            record = _read(path)
            if record is not None:
                yield record


def _read(path: Path) -> Record | None:
    try:
        return Record.from_json(json.loads(path.read_text()), str(path))
    except PeftbenchError as exc:  # its message starts with the path
        warnings.warn(f"skipping unreadable record {exc}")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        warnings.warn(f"skipping unreadable record {path}: {exc}")
    return None
