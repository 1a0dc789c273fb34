"""Sweep manifests, sessions and claims, under `<results>/.sweeps/<sweep id>/`.

- `manifest.json`: the request and every unit (key, kind, task, method, seed, the trials a final
  waits for). Same request, same sweep id, same units: a rerun finds what is left from the records.
- `sessions/<id>.json`: one invocation of `peftbench run`: the request and the units it must do
  (unfinished ones; failed ones too with --retry-failed; all with --force). Workers read it.
- `<results>/.sweeps/claims/<unit key>.<attempt>`: created exclusively by the worker that runs the
  unit, in whatever session or sweep, holding its host and pid; while the unit runs its worker touches the file every
  HEARTBEAT_SECONDS. A claim is live while its process runs (same host) or, from another host (a
  Slurm node), while its heartbeat is younger than LEASE_SECONDS; a dead claim is taken over by
  the next attempt. So two sessions of one sweep never run a unit twice.
Every file is written atomically, so a kill at any moment leaves nothing half-written.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..atomic import read_json_object, write_json_atomic
from ..errors import PeftbenchError

SWEEPS = ".sweeps"
HEARTBEAT_SECONDS = 60.0
LEASE_SECONDS = 600.0  # a claim from another host without a heartbeat for this long is dead


def claims_dir(root: Path) -> Path:
    """Claims live beside the sweeps, not in one: unit keys are global, and two sweeps may share units."""
    return Path(root) / SWEEPS / "claims"


def sweep_dir(root: Path, sweep_id: str) -> Path:
    return Path(root) / SWEEPS / sweep_id


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_manifest(root: Path, sweep_id: str, request_payload: dict[str, Any], units: list[dict[str, Any]]) -> Path:
    folder = sweep_dir(root, sweep_id)
    path = folder / "manifest.json"
    with writing(folder):
        folder.mkdir(parents=True, exist_ok=True)
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
    created: str = ""  # when the session started
    # the records this session is to replace (--force, --retry-failed): unit key -> record marker; any
    # other record of a unit in `todo` was written meanwhile by another session and settles it
    replaces: dict[str, str] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return sweep_dir(self.root, self.sweep) / "sessions" / f"{self.id}.json"

    @property
    def claims(self) -> Path:
        return claims_dir(self.root)


def start_session(
    root: Path, sweep_id: str, request_payload: dict[str, Any], todo: list[str], replaces: dict[str, str] | None = None
) -> Session:
    session = Session(
        f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}",
        sweep_id,
        Path(root).absolute(),
        request_payload,
        tuple(todo),
        _now(),
        dict(replaces or {}),
    )
    with writing(session.path.parent):
        session.path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(
            session.path,
            {"id": session.id, "sweep": sweep_id, "created": session.created, "request": request_payload,
             "todo": list(todo), "replaces": session.replaces},
        )  # fmt: skip
    return session


@contextlib.contextmanager
def writing(folder: Path):
    """A file the sweep needs cannot be written (read-only or full disk): one line saying where."""
    try:
        yield
    except OSError as exc:
        raise PeftbenchError(f"cannot write the sweep's files under {folder}: {exc.strerror or exc}") from None


def load_session(path: Path) -> Session:
    raw = read_json_object(Path(path))
    if not raw:
        raise FileNotFoundError(f"no readable session file at {path}")
    root = Path(path).resolve().parents[3]  # <root>/.sweeps/<sweep>/sessions/<id>.json
    return Session(raw["id"], raw["sweep"], root, raw["request"], tuple(raw["todo"]), raw.get("created", ""),
                   raw.get("replaces", {}))  # fmt: skip


def claim(session: Session, unit_key: str, worker: str) -> Path | None:
    """Claim a unit for this process (its claim file), or None when a live process of any session holds it."""
    with writing(session.claims):
        session.claims.mkdir(parents=True, exist_ok=True)
        attempts = sorted(session.claims.glob(f"{unit_key}.*"), key=lambda p: int(p.suffix[1:]))
        if attempts and claim_is_live(read_json_object(attempts[-1]), attempts[-1]):
            return None
        path = session.claims / f"{unit_key}.{len(attempts)}"
        temporary = session.claims / f".{unit_key}.{uuid.uuid4().hex}.tmp"
        try:
            temporary.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "worker": worker,
                                             "session": session.id, "started": _now()}))  # fmt: skip
            os.link(temporary, path)  # exclusive and complete at once: the claim appears with its content
        except FileExistsError:
            return None  # another worker took this attempt first
        finally:
            temporary.unlink(missing_ok=True)
    return path


@contextlib.contextmanager
def heartbeat(path: Path):
    """Touch the claim file every HEARTBEAT_SECONDS while the unit runs (its lease for other hosts)."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_SECONDS):
            try:
                os.utime(path)
            except OSError:
                return

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def release(session: Session, unit_key: str) -> None:
    for path in session.claims.glob(f"{unit_key}.*"):
        path.unlink(missing_ok=True)


def live_claims(root: Path) -> set[str]:
    """Unit keys held by a live process (in any session or sweep)."""
    held = set()
    for path in claims_dir(root).glob("*.*"):
        if claim_is_live(read_json_object(path), path):
            held.add(path.stem)
    return held


def claim_is_live(claim_data: dict[str, Any], path: Path | None = None) -> bool:
    """A claim from this host is live while its pid runs; one from another host (a Slurm node) while
    its heartbeat (the file's modification time) is younger than LEASE_SECONDS."""
    if not claim_data:
        return False
    if claim_data.get("host") != socket.gethostname():
        try:
            return path is not None and time.time() - path.stat().st_mtime < LEASE_SECONDS
        except OSError:
            return False
    try:
        os.kill(int(claim_data["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
