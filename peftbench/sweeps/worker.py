"""A sweep worker: `python -m peftbench.sweeps.worker SESSION_FILE [--worker NAME]`.

Started by the local launcher (one per CPU share or GPU) and by the Slurm launcher (one per array
task); pulls the session's ready units until none is left. One line per finished unit on stdout.
"""

from __future__ import annotations

import argparse
import os
import socket
from pathlib import Path

from ..record import Record
from ..store import Store
from .manifest import load_session
from .plan import plan
from .protocols import Unit
from .request import RunRequest
from .work import SweepListener, SweepOutcome, work


class LineListener(SweepListener):
    def __init__(self, name: str):
        self.name = name

    def run_finished(self, unit: Unit, record: Record) -> None:
        if record.ok:
            metrics = record.metrics
            print(
                f"[{self.name}] ok {unit.label()}: {metrics.name} {metrics.top1:.1f} ({record.timing.wall_seconds:.1f} s)",
                flush=True,
            )
        else:
            print(f"[{self.name}] failed {unit.label()}: {record.reason}", flush=True)


def run_worker(session_file: str, name: str | None = None) -> dict[str, int]:
    """Work one session; returns counts (what a Slurm array task's result holds)."""
    session = load_session(Path(session_file))
    request = RunRequest.from_payload(session.request)
    name = name or f"{socket.gethostname()}:{os.getpid()}"
    outcome: SweepOutcome = work(request, Store(session.root), session, LineListener(name), plan(request), worker=name)
    return {"done": len(outcome.done), "failed": len(outcome.failed)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m peftbench.sweeps.worker", description=__doc__.splitlines()[0])
    parser.add_argument("session", help="a session file under <results>/.sweeps/<sweep>/sessions/")
    parser.add_argument("--worker", default=None, help="this worker's name in records and claims")
    args = parser.parse_args(argv)
    run_worker(args.session, args.worker)


if __name__ == "__main__":
    main()
