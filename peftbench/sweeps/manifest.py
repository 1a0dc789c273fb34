"""Sweep manifests, sessions and claims, under `<results>/.sweeps/<sweep id>/`.

- `manifest.json`: the request and every unit (key, kind, task, method, seed, the trials a final
  waits for). Same request, same sweep id, same units: a rerun finds what is left from the records.
- `sessions/<id>.json`: one invocation of `peftbench run`: the request and the units it must do
  (unfinished ones; failed ones too with --retry-failed; all with --force). Workers read it.
- `claims/<session>/<unit key>.<attempt>`: created exclusively by the worker that runs the unit,
  holding its host and pid. A claim whose process is gone (a killed worker) is taken over by the
  next attempt; claims of an older session mean nothing to a new one.
Every file is written atomically, so a kill at any moment leaves nothing half-written.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..atomic import read_json_object, write_json_atomic

SWEEPS = ".sweeps"


def sweep_dir(root: Path, sweep_id: str) -> Path:
    return Path(root) / SWEEPS / sweep_id


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_manifest(root: Path, sweep_id: str, request_payload: dict[str, Any], units: list[dict[str, Any]]) -> Path:
    folder = sweep_dir(root, sweep_id)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "manifest.json"
    created = read_json_object(path).get("created", _now()) if path.exists() else _now()
    write_json_atomic(path, {"sweep": sweep_id, "created": created, "request": request_payload, "units": units})
    return path


def manifests(root: Path) -> list[dict[str, Any]]:
    """Every readable manifest under `root`, oldest first."""
    found = [read_json_object(p) for p in sorted((Path(root) / SWEEPS).glob("*/manifest.json"))]
    return sorted((m for m in found if m), key=lambda m: m.get("created", ""))


@dataclass(frozen=True)
class Session:
    id: str
    sweep: str
    root: Path
    request: dict[str, Any]
    todo: tuple[str, ...]

    @property
    def path(self) -> Path:
        return sweep_dir(self.root, self.sweep) / "sessions" / f"{self.id}.json"

    @property
    def claims(self) -> Path:
        return sweep_dir(self.root, self.sweep) / "claims" / self.id


def start_session(root: Path, sweep_id: str, request_payload: dict[str, Any], todo: list[str]) -> Session:
    session = Session(
        f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}",
        sweep_id,
        Path(root).absolute(),
        request_payload,
        tuple(todo),
    )
    session.path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(
        session.path,
        {"id": session.id, "sweep": sweep_id, "created": _now(), "request": request_payload, "todo": list(todo)},
    )
    return session


def load_session(path: Path) -> Session:
    raw = read_json_object(Path(path))
    if not raw:
        raise FileNotFoundError(f"no readable session file at {path}")
    root = Path(path).resolve().parents[3]  # <root>/.sweeps/<sweep>/sessions/<id>.json
    return Session(raw["id"], raw["sweep"], root, raw["request"], tuple(raw["todo"]))


def claim(session: Session, unit_key: str, worker: str) -> bool:
    """Claim a unit for this process; False when a live process holds it."""
    session.claims.mkdir(parents=True, exist_ok=True)
    attempts = sorted(session.claims.glob(f"{unit_key}.*"), key=lambda p: int(p.suffix[1:]))
    if attempts and claim_is_live(read_json_object(attempts[-1])):
        return False
    path = session.claims / f"{unit_key}.{len(attempts)}"
    temporary = session.claims / f".{unit_key}.{uuid.uuid4().hex}.tmp"
    temporary.write_text(
        json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "worker": worker, "started": _now()})
    )
    try:
        os.link(temporary, path)  # exclusive and complete at once: the claim appears with its content
    except FileExistsError:
        return False  # another worker took this attempt first
    finally:
        temporary.unlink(missing_ok=True)
    return True


def release(session: Session, unit_key: str) -> None:
    for path in session.claims.glob(f"{unit_key}.*"):
        path.unlink(missing_ok=True)


def live_claims(root: Path, sweep_id: str) -> set[str]:
    """Unit keys held by a live process in any session of the sweep."""
    held = set()
    for path in (sweep_dir(root, sweep_id) / "claims").glob("*/*.*"):
        if claim_is_live(read_json_object(path)):
            held.add(path.stem)
    return held


def claim_is_live(claim_data: dict[str, Any]) -> bool:
    """A claim from this host is live while its pid runs; claims from other hosts (Slurm nodes)
    cannot be checked and count as live."""
    if not claim_data:
        return False
    if claim_data.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(claim_data["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
