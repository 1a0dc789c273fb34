"""A sweep worker: `python -m peftbench.worker SESSION_FILE [--worker NAME]`.

Started by the local launcher (one per CPU share or GPU) and by the Slurm launcher (one per array
task); pulls the session's ready units until none is left. One line per finished unit on stdout.
"""
from __future__ import annotations

import argparse
import os
import socket
from pathlib import Path
from typing import Any

from .manifest import load_session
from .protocols import Unit
from .request import RunRequest
from .store import Store
from .sweep import SweepListener, SweepOutcome, work


class LineListener(SweepListener):
    def __init__(self, name: str):
        self.name = name

    def run_finished(self, unit: Unit, record: dict[str, Any]) -> None:
        if record["status"] == "ok":
            metric, value = next((k, v) for k, v in record["metrics"].items() if k.endswith("_top1"))
            print(f"[{self.name}] ok {unit.label()}: {metric} {value:.1f} ({record['wall_seconds']:.1f} s)", flush=True)
        else:
            print(f"[{self.name}] failed {unit.label()}: {record['reason']}", flush=True)


def run_worker(session_file: str, name: str | None = None) -> dict[str, int]:
    """Work one session; returns counts (what a Slurm array task's result holds)."""
    session = load_session(Path(session_file))
    request = RunRequest.from_payload(session.request)
    name = name or f"{socket.gethostname()}:{os.getpid()}"
    outcome: SweepOutcome = work(request, Store(session.root), session, LineListener(name), worker=name)
    return {"done": len(outcome.done), "failed": len(outcome.failed)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m peftbench.worker", description=__doc__.splitlines()[0])
    parser.add_argument("session", help="a session file under <results>/.sweeps/<sweep>/sessions/")
    parser.add_argument("--worker", default=None, help="this worker's name in records and claims")
    args = parser.parse_args(argv)
    run_worker(args.session, args.worker)


if __name__ == "__main__":
    main()
