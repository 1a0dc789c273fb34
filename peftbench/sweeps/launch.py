"""Launchers: where a session's units run, behind one call, `execute(request, store, launcher)`.

- `InProcess`: this process works the session (progress drawn by the listener it is given);
- `LocalWorkers`: worker processes on this machine, sharing the CPU or one or more per GPU;
- `Slurm`: a job array of workers through submitit, optionally waited for.

Workers pull units from the same session (`work.work`); the results folder is the only thing they
share, so a Slurm array needs it on a shared file system.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

from .. import backbone, engine
from ..data import prepare_suite_data
from ..errors import PeftbenchError
from ..store import Store
from .manifest import Session, load_session, sweep_dir
from .plan import marker, open_session, plan
from .protocols import Unit
from .request import RunRequest
from .work import SweepListener, SweepOutcome, work


@dataclasses.dataclass(frozen=True)
class Submission:
    """A Slurm job array submitted and not waited for."""

    job_id: str
    tasks: int
    units: int
    results: Path


class Launcher:
    """Runs a session's units; returns what happened, or the submission when it does not wait."""

    def launch(
        self, request: RunRequest, store: Store, session: Session, units: list[Unit]
    ) -> SweepOutcome | Submission:
        raise NotImplementedError


def execute(request: RunRequest, store: Store, launcher: Launcher) -> SweepOutcome | Submission:
    """Plan the request, write its manifest and a session of the units still to do, and launch them."""
    units = plan(request)  # settings, options and the weights' location checked: nothing written yet
    engine.resolve_device(request.device)
    backbone.check_weights(request.model, request.weights)
    prepare_suite_data(request.suite, request.tasks, request.data_root)
    session = open_session(request, store, units)
    return launcher.launch(request, store, session, units)


@dataclasses.dataclass
class InProcess(Launcher):
    """This process works the session; `listener` is a context manager drawing progress (or None)."""

    listener: Callable[[int], Any] | None = None  # total units -> a SweepListener context manager

    def launch(self, request, store, session, units) -> SweepOutcome:
        if self.listener is None:
            return work(request, store, session, SweepListener(), units)
        with self.listener(len(units)) as progress:
            return work(request, store, session, progress, units)


@dataclasses.dataclass
class LocalWorkers(Launcher):
    """One worker process per share (see `worker_shares`), waited for; outcomes read back from the records."""

    shares: list[tuple[str, dict[str, str]]]

    def launch(self, request, store, session, units) -> SweepOutcome:
        run_local_workers(session, self.shares)
        return outcome_of(session, units, store)


@dataclasses.dataclass(frozen=True)
class Slurm(Launcher):
    """A job array of workers, each array task packing `gpus_per_node x runs_per_gpu` worker processes."""

    workers: int = 1  # array tasks; 1: one per `gpus_per_node x runs_per_gpu` units left, up to array_parallelism
    partition: str | None = None
    time_minutes: int = 24 * 60
    gpus_per_node: int = 1
    array_parallelism: int = 64
    runs_per_gpu: int = 1  # worker processes per GPU inside each array task
    wait: bool = False
    cluster: str | None = None  # None: slurm; "local" runs the array with submitit's local executor (tests)

    def array_tasks(self, todo: int) -> int:
        per_task = max(1, self.gpus_per_node) * self.runs_per_gpu  # worker processes in one array task
        return self.workers if self.workers > 1 else min(-(-todo // per_task), self.array_parallelism)

    def launch(self, request, store, session, units) -> SweepOutcome | Submission:
        """The submission (none when every unit has a record); with `wait`, the outcome holding it."""
        jobs, submission = [], Submission("", 0, 0, session.root)
        if session.todo:
            tasks = self.array_tasks(len(session.todo))
            jobs = submit_slurm(session, self, tasks)
            submission = Submission(jobs[0].job_id.split("_")[0], tasks, len(session.todo), session.root)
        if not self.wait:
            return submission
        for job in jobs:
            job.result()
        return dataclasses.replace(outcome_of(session, units, store), submission=submission)


def launcher_from_options(
    launcher: str = "local",
    workers: int = 1,
    gpus: str | None = None,
    runs_per_gpu: int = 1,
    partition: str | None = None,
    time: int = 24 * 60,
    gpus_per_node: int = 1,
    array_parallelism: int = 64,
    wait: bool = False,
    listener: Callable[[int], Any] | None = None,
) -> Launcher:
    """The launcher the command line asks for (`PEFTBENCH_SUBMITIT_CLUSTER=local` runs a Slurm array locally)."""
    if launcher == "slurm":
        cluster = os.environ.get("PEFTBENCH_SUBMITIT_CLUSTER")
        return Slurm(workers, partition, time, gpus_per_node, array_parallelism, runs_per_gpu, wait, cluster)
    return local_launcher(workers, gpus, runs_per_gpu, listener)


def local_launcher(
    workers: int, gpus: str | None, runs_per_gpu: int, listener: Callable[[int], Any] | None
) -> Launcher:
    """`InProcess` for one CPU worker, else `LocalWorkers` over the CPU shares or the GPUs."""
    if workers < 1 or runs_per_gpu < 1:
        raise PeftbenchError(f"--workers and --runs-per-gpu must be at least 1, got {workers} and {runs_per_gpu}")
    gpu_list = parse_gpus(gpus, runs_per_gpu)
    if workers > 1 or gpu_list:
        return LocalWorkers(worker_shares(workers, gpu_list, runs_per_gpu))
    return InProcess(listener)


def parse_gpus(gpus: str | None, runs_per_gpu: int = 1) -> list[int]:
    """The --gpus numbers; with --runs-per-gpu above 1 and no --gpus, every visible GPU."""
    if not gpus and runs_per_gpu > 1:
        import torch

        if not torch.cuda.device_count():
            raise PeftbenchError(
                "--runs-per-gpu packs runs on CUDA devices and torch sees none; on the CPU use --workers N"
            )
        return list(range(torch.cuda.device_count()))
    if not gpus:
        return []
    try:
        return [int(g) for g in gpus.split(",")]
    except ValueError:
        raise PeftbenchError(f"--gpus expects device numbers like 0,1,2, got '{gpus}'") from None


def worker_command(session: Session, name: str) -> list[str]:
    return [sys.executable, "-m", "peftbench.sweeps.worker", str(session.path), "--worker", name]


def worker_shares(
    workers: int, gpus: list[int] | None = None, runs_per_gpu: int = 1
) -> list[tuple[str, dict[str, str]]]:
    """(name, environment) of each local worker: `runs_per_gpu` per GPU in `gpus` (indices into the
    devices this process sees, so a Slurm allocation's CUDA_VISIBLE_DEVICES is respected), or
    `workers` on the CPU with its threads shared out."""
    if gpus:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        devices = visible.split(",") if visible else None
        if devices is not None and max(gpus) >= len(devices):
            raise PeftbenchError(
                f"--gpus {','.join(map(str, gpus))}: only {len(devices)} device(s) visible "
                f"(CUDA_VISIBLE_DEVICES={visible})"
            )
        return [
            (
                f"gpu{g}" + (f".{r}" if runs_per_gpu > 1 else ""),
                {"CUDA_VISIBLE_DEVICES": devices[g] if devices else str(g)},
            )
            for g in gpus
            for r in range(runs_per_gpu)
        ]
    threads = str(max(1, (os.cpu_count() or 1) // workers))
    return [(f"cpu{i}", {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}) for i in range(workers)]


def run_local_workers(session: Session, shares: list[tuple[str, dict[str, str]]], prefix: str = "") -> None:
    """Run one worker process per share (see `worker_shares`) and wait for all of them."""
    processes = [
        subprocess.Popen(worker_command(session, prefix + name), env={**os.environ, **env}) for name, env in shares
    ]
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


def submit_slurm(session: Session, options: Slurm, tasks: int) -> list[Any]:
    """Submit a job array of `tasks` workers; returns submitit's jobs."""
    try:
        import submitit
    except ImportError:
        raise PeftbenchError("--launcher slurm needs submitit (a peftbench dependency): pip install submitit") from None
    executor = submitit.AutoExecutor(
        folder=sweep_dir(session.root, session.sweep) / "submitit" / "%j", cluster=options.cluster or "slurm"
    )
    parameters: dict[str, Any] = {
        "name": f"peftbench-{session.sweep}",
        "timeout_min": options.time_minutes,
        "slurm_array_parallelism": options.array_parallelism,
    }
    if options.gpus_per_node:
        parameters["gpus_per_node"] = options.gpus_per_node
    if options.partition:
        parameters["slurm_partition"] = options.partition
    executor.update_parameters(**parameters)
    from .worker import run_worker

    names = [f"array{i}" for i in range(tasks)]
    sessions = [str(session.path)] * tasks
    if options.runs_per_gpu > 1:
        gpus = max(1, options.gpus_per_node)
        return executor.map_array(run_packed_workers, sessions, names, [gpus] * tasks, [options.runs_per_gpu] * tasks)
    return executor.map_array(run_worker, sessions, names)


def outcome_of(session: Session, units: list[Unit], store: Store) -> SweepOutcome:
    """What a session's workers did, read back from the records."""
    outcome = SweepOutcome()
    todo = set(session.todo)
    for unit in units:
        record = store.get(unit.describe())
        if unit.key not in todo:
            outcome.skip(unit, record)
        elif (
            record is not None
            and (record.unit is None or record.unit.session != session.id)
            and (marker(record) != session.replaces.get(unit.key))
        ):
            outcome.elsewhere.append(unit)  # written meanwhile by another session
        elif record is None or record.unit is None or record.unit.session != session.id:
            outcome.failed.append((unit, "not run: its worker stopped before it (rerun the command to resume)"))
        elif record.ok:
            outcome.done.append(unit)
        else:
            outcome.failed.append((unit, record.reason))
    return outcome
