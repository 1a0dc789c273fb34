"""Launchers: spread a session's units over local worker processes or a Slurm job array (submitit).

Workers pull units from the same session (peftbench.sweep.work); the results folder is the only
thing they share, so a Slurm array needs it on a shared file system.
"""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from .errors import PeftbenchError
from .manifest import Session, sweep_dir
from .protocols import Unit
from .store import Store
from .sweep import SweepOutcome, note_skipped


def worker_command(session: Session, name: str) -> list[str]:
    return [sys.executable, "-m", "peftbench.worker", str(session.path), "--worker", name]


def run_local_workers(session: Session, workers: int, gpus: list[int] | None = None) -> None:
    """Run `workers` worker processes on the CPU (threads shared out), or one per GPU in `gpus`,
    and wait for all of them."""
    if gpus:
        shares = [(f"gpu{g}", {"CUDA_VISIBLE_DEVICES": str(g)}) for g in gpus]
    else:
        threads = str(max(1, (os.cpu_count() or 1) // workers))
        shares = [(f"cpu{i}", {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}) for i in range(workers)]
    processes = [subprocess.Popen(worker_command(session, name), env={**os.environ, **env}) for name, env in shares]
    try:
        codes = [p.wait() for p in processes]
    except KeyboardInterrupt:
        for p in processes:
            p.terminate()
        raise
    bad = [f"{name} (exit {code})" for (name, _), code in zip(shares, codes) if code != 0]
    if bad:
        raise PeftbenchError(f"worker(s) {', '.join(bad)} stopped early; rerun the same command to resume")


@dataclass(frozen=True)
class SlurmOptions:
    tasks: int  # array tasks, each a worker
    partition: str | None = None
    time_minutes: int = 24 * 60
    gpus_per_node: int = 1
    array_parallelism: int = 64
    cluster: str | None = None  # None: slurm; "local" runs the array with submitit's local executor (tests)


def submit_slurm(session: Session, options: SlurmOptions) -> list[Any]:
    """Submit a job array of workers; returns submitit's jobs."""
    try:
        import submitit
    except ImportError:
        raise PeftbenchError("--launcher slurm needs submitit (a peftbench dependency): pip install submitit") from None
    executor = submitit.AutoExecutor(folder=sweep_dir(session.root, session.sweep) / "submitit" / "%j",
                                     cluster=options.cluster or "slurm")
    parameters: dict[str, Any] = {"name": f"peftbench-{session.sweep}", "timeout_min": options.time_minutes,
                                  "slurm_array_parallelism": options.array_parallelism}
    if options.gpus_per_node:
        parameters["gpus_per_node"] = options.gpus_per_node
    if options.partition:
        parameters["slurm_partition"] = options.partition
    executor.update_parameters(**parameters)
    from .worker import run_worker

    names = [f"array{i}" for i in range(options.tasks)]
    return executor.map_array(run_worker, [str(session.path)] * options.tasks, names)


def outcome_of(session: Session, units: list[Unit], store: Store) -> SweepOutcome:
    """What a session's workers did, read back from the records."""
    outcome = SweepOutcome()
    todo = set(session.todo)
    for unit in units:
        record = store.get(unit)
        if unit.key not in todo:
            note_skipped(outcome, unit, record)
        elif record is None or record.get("session") != session.id:
            outcome.failed.append((unit, "not run: its worker stopped before it (rerun the command to resume)"))
        elif record["status"] == "ok":
            outcome.done.append(unit)
        else:
            outcome.failed.append((unit, record.get("reason", "")))
    return outcome
