"""Records on disk: one JSON file per unit of work, written atomically, found by the unit's key.

Layout: `<root>/<suite>/<task>/<method>-seed<seed>-<key>.json` for runs and tune finals,
`<root>/<suite>/<task>/tune/<method>-<key>.json` for tune trials; beside a record, its predictions
(`<record name>.predictions.npz`, written first, the record holding its sha256). A record is written to a
temporary file in the same folder and renamed into place, so a reader never sees half a record
(a killed writer leaves at most a `.tmp` file, which nothing reads). Records of every format
peftbench has written are read (`Record.from_json` migrates them); none is rewritten in place.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import warnings
from pathlib import Path
from typing import Any, Iterator

from .atomic import write_bytes_atomic, write_json_atomic
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
            record = self._write_predictions(record, path)
            write_json_atomic(path, record.to_json())
        except OSError as exc:  # the store itself is broken (read-only, full): nothing more can be recorded
            raise PeftbenchError(f"cannot write records under {self.root}: {exc.strerror or exc} ({path})") from None
        return path

    @staticmethod
    def _write_predictions(record: Record, path: Path) -> Record:
        """Write the record's prediction arrays beside it (atomically) and return the record holding
        the sidecar's name and sha256; a record without arrays is returned as it is."""
        predictions = record.predictions
        if predictions is None or predictions.arrays is None:
            return record
        import numpy as np

        predicted, labels = predictions.arrays
        buffer = io.BytesIO()
        np.savez_compressed(buffer, predicted=np.asarray(predicted), labels=np.asarray(labels))
        payload = buffer.getvalue()
        sidecar = path.with_name(f"{path.stem}.predictions.npz")
        write_bytes_atomic(sidecar, payload)
        stored = dataclasses.replace(
            predictions, file=sidecar.name, sha256=hashlib.sha256(payload).hexdigest(), arrays=None
        )
        return dataclasses.replace(record, predictions=stored)

    def predictions(self, record: Record):
        """(predicted, labels) of a record, read from its sidecar and checked against the record's hash."""
        if record.predictions is None or not record.predictions.file:
            raise PeftbenchError(f"record {record.key} ({record.spec.method}, {record.spec.task}) keeps no predictions; "
                                 "rerun it with this peftbench (--force) to compare it")  # fmt: skip
        import numpy as np

        sidecar = self.path(record.locator()).with_name(record.predictions.file)
        try:
            payload = sidecar.read_bytes()
        except OSError as exc:
            raise PeftbenchError(f"cannot read the predictions {sidecar}: {exc.strerror or exc}") from None
        if hashlib.sha256(payload).hexdigest() != record.predictions.sha256:
            raise PeftbenchError(f"{sidecar}: its sha256 differs from the one its record holds (changed after the run)")
        with np.load(io.BytesIO(payload)) as arrays:
            return arrays["predicted"], arrays["labels"]

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
