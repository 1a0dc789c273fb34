"""Launchers: spread a session's units over local worker processes or a Slurm job array (submitit).

Workers pull units from the same session (peftbench.sweep.work); the results folder is the only
thing they share, so a Slurm array needs it on a shared file system.
"""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import PeftbenchError
from .manifest import Session, load_session, sweep_dir
from .protocols import Unit
from .store import Store
from .sweep import SweepOutcome, note_skipped


def worker_command(session: Session, name: str) -> list[str]:
    return [sys.executable, "-m", "peftbench.worker", str(session.path), "--worker", name]


def worker_shares(workers: int, gpus: list[int] | None = None, runs_per_gpu: int = 1) -> list[tuple[str, dict[str, str]]]:
    """(name, environment) of each local worker: `runs_per_gpu` per GPU in `gpus` (indices into the
    devices this process sees, so a Slurm allocation's CUDA_VISIBLE_DEVICES is respected), or
    `workers` on the CPU with its threads shared out."""
    if gpus:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        devices = visible.split(",") if visible else None
        if devices is not None and max(gpus) >= len(devices):
            raise PeftbenchError(f"--gpus {','.join(map(str, gpus))}: only {len(devices)} device(s) visible "
                                 f"(CUDA_VISIBLE_DEVICES={visible})")
        return [(f"gpu{g}" + (f".{r}" if runs_per_gpu > 1 else ""), {"CUDA_VISIBLE_DEVICES": devices[g] if devices else str(g)})
                for g in gpus for r in range(runs_per_gpu)]
    threads = str(max(1, (os.cpu_count() or 1) // workers))
    return [(f"cpu{i}", {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}) for i in range(workers)]


def run_local_workers(session: Session, shares: list[tuple[str, dict[str, str]]], prefix: str = "") -> None:
    """Run one worker process per share (see `worker_shares`) and wait for all of them."""
    processes = [subprocess.Popen(worker_command(session, prefix + name), env={**os.environ, **env})
                 for name, env in shares]
    try:
        codes = [p.wait() for p in processes]
    except KeyboardInterrupt:
        for p in processes:
            p.terminate()
        raise
    bad = [f"{prefix}{name} (exit {code})" for (name, _), code in zip(shares, codes) if code != 0]
    if bad:
        raise PeftbenchError(f"worker(s) {', '.join(bad)} stopped early; rerun the same command to resume")


def run_packed_workers(session_file: str, name: str, gpus: int, runs_per_gpu: int) -> None:
    """A Slurm array task packing `runs_per_gpu` worker processes on each of its `gpus` GPUs."""
    run_local_workers(load_session(Path(session_file)), worker_shares(1, list(range(gpus)), runs_per_gpu), f"{name}.")


@dataclass(frozen=True)
class SlurmOptions:
    tasks: int  # array tasks, each a worker
    partition: str | None = None
    time_minutes: int = 24 * 60
    gpus_per_node: int = 1
    array_parallelism: int = 64
    runs_per_gpu: int = 1  # worker processes per GPU inside each array task
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
    sessions = [str(session.path)] * options.tasks
    if options.runs_per_gpu > 1:
        gpus = max(1, options.gpus_per_node)
        return executor.map_array(run_packed_workers, sessions, names, [gpus] * options.tasks,
                                  [options.runs_per_gpu] * options.tasks)
    return executor.map_array(run_worker, sessions, names)


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
