"""`peftbench bench`: each method's training and evaluation throughput, peak memory and
trainable parameters, on synthetic inputs (no dataset, random weights).

Training goes through the engine's own path — uint8 batches normalised on the device, bf16
autocast on CUDA, the optimiser, the loss read every `log_every` steps — so the figures are those
a run sees. Linear probing is measured as the engine runs it: the frozen backbone once per image
(its `eval` rate) and the head on cached features (its `train` rate). With `runs_per_gpu` > 1,
that many bench processes time their steps together (a file barrier lines up their windows)
and the packed figure is their images over the span from the first start to the last end.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

from . import engine, provenance
from .api import build_model, method_of
from .backbone import head_parameter_names, model_input_size_of, normalisation
from .data.batches import BatchMaker
from .data.loading import SplitData
from .data.recipes import RECIPES
from .errors import PeftbenchError
from .methods import get_method
from .params import count_parameters
from .settings import TrainConfig, check_keys, parse_assignments
from .suites import Suite, get_suite

RECIPE = RECIPES["vtab-resize"]
BARRIER_SECONDS = 600


@dataclasses.dataclass(frozen=True)
class BenchSetup:
    model: str
    batch_size: int
    device: torch.device
    steps: int = 10  # timed training steps
    warmup: int = 2  # untimed steps first (allocator, kernels, compilation)
    eval_batches: int = 4  # timed evaluation batches
    eval_batch_size: int = 0  # 0: 4 × batch_size
    num_classes: int = 100
    stored_size: int = 0  # synthetic images' stored side; 0: the model's input (below it, resized per batch)
    compile: bool = False
    barrier: tuple[str, int] | None = None  # (folder, processes) to start the timed steps together

    @property
    def eval_size(self) -> int:
        return self.eval_batch_size or 4 * self.batch_size


@dataclasses.dataclass(frozen=True)
class BenchRow:
    method: str
    path: str  # "end-to-end" or "cached features" (linear probing)
    trainable: int
    trainable_without_head: int
    train_images_per_second: float
    eval_images_per_second: float  # unmerged (for cached features: the backbone's one pass per image)
    merged_eval_images_per_second: float | None  # None: the method does not merge
    peak_memory_mb: float | None  # CUDA max allocated while training; None on the CPU
    fused_attention: bool
    train_window: tuple[float, float] = (0.0, 0.0)  # wall-clock start and end of the timed steps


def synthetic_split(count: int, size: int, num_classes: int, seed: int = 0) -> SplitData:
    """`count` random uint8 images (3, size, size) with labels cycling through the classes."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (count, 3, size, size), dtype=torch.uint8, generator=generator)
    return SplitData(images, torch.arange(count) % num_classes)


def bench_method(name: str, setup: BenchSetup, options: dict[str, Any] | None = None) -> BenchRow:
    """Measure one method on the harness's paths."""
    torch.manual_seed(0)
    model = build_model(name, setup.model, setup.num_classes, pretrained=False, **(options or {})).to(setup.device)
    method = method_of(model)
    params = count_parameters(model, head_parameter_names(model))
    size = model_input_size_of(model)
    normalise = engine.Normalise(*normalisation(model)).to(setup.device)
    cached = engine.trains_on_cached_features(model, RECIPE)

    def split(steps: int, batch: int, seed: int) -> SplitData:
        return synthetic_split(steps * batch, setup.stored_size or size, setup.num_classes, seed)

    def batches(data: SplitData, train: bool) -> BatchMaker:
        return BatchMaker(data, RECIPE, size, setup.device, train=train, resident=train)

    model.eval()
    evaluation = batches(split(setup.eval_batches, setup.eval_size, 1), False)
    eval_rate = _eval_rate(engine.images_forward(model, normalise), evaluation, setup)
    merged_rate = None
    if method.mergeable and not cached:
        plain = method.merge(model).eval()
        merged_rate = _eval_rate(engine.images_forward(plain, normalise), evaluation, setup)
        del plain
    optimizer = engine.build_optimizer(model, method.no_weight_decay(model), TrainConfig(), setup.device)
    if cached:

        def trainer(data: SplitData) -> tuple[Callable, Callable]:
            features = engine.cached_features(
                model, normalise, batches(data, True), len(data), setup.eval_size, setup.device
            ).to(setup.device)
            return model.get_classifier(), features.__getitem__
    else:
        model.train()
        forward = engine.images_forward(model, normalise, setup.compile)

        def trainer(data: SplitData) -> tuple[Callable, Callable]:
            return forward, batches(data, True)

    if setup.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(setup.device)
    train_rate, window = _train_rate(optimizer, trainer, split, setup, name)
    peak = torch.cuda.max_memory_allocated(setup.device) / 2**20 if setup.device.type == "cuda" else None
    return BenchRow(
        name,
        "cached features" if cached else "end-to-end",
        params["trainable"],
        params["trainable_without_head"],
        train_rate,
        eval_rate,
        merged_rate,
        peak,
        engine.uses_fused_attention(model),
        window,
    )


def _train_rate(optimizer, trainer, split, setup: BenchSetup, tag: str) -> tuple[float, tuple[float, float]]:
    """Training images/s over `setup.steps` steps of the engine's `fit`, after `setup.warmup` steps
    (inputs are prepared before the clock starts)."""

    def prepared(steps: int, seed: int) -> Callable[[], None]:
        data = split(steps, setup.batch_size, seed)
        forward, batches = trainer(data)
        cfg = TrainConfig(epochs=1, warmup_epochs=0, batch_size=setup.batch_size, log_every=steps, lr=1e-4)
        return lambda: engine.fit(forward, optimizer, batches, data.labels, cfg, setup.device, engine.SilentListener())

    prepared(setup.warmup, 2)()
    timed = prepared(setup.steps, 3)
    if setup.barrier:
        _wait_for_peers(*setup.barrier, tag)
    begin, started = time.time(), time.perf_counter()
    timed()  # fit reads the loss after its last step: the device has finished when it returns
    seconds = time.perf_counter() - started
    return setup.steps * setup.batch_size / seconds, (begin, begin + seconds)


@torch.no_grad()
def _eval_rate(forward: Callable, batches: BatchMaker, setup: BenchSetup) -> float:
    """Evaluation images/s over `setup.eval_batches` batches, after one untimed batch."""
    count = setup.eval_batches * setup.eval_size
    engine.predict(forward, batches, setup.eval_size, setup.eval_size, setup.device)
    started = time.perf_counter()
    engine.predict(forward, batches, count, setup.eval_size, setup.device)
    return count / (time.perf_counter() - started)


def _wait_for_peers(folder: str, processes: int, tag: str) -> None:
    """Mark this process ready for `tag` (a method) and wait until `processes` are: the packed
    runs start timing each method together."""
    Path(folder, f"ready.{tag}.{os.getpid()}").touch()
    deadline = time.monotonic() + BARRIER_SECONDS
    while len(list(Path(folder).glob(f"ready.{tag}.*"))) < processes:
        if time.monotonic() > deadline:
            raise PeftbenchError(
                f"bench: {processes} packed processes did not all get ready within {BARRIER_SECONDS} s"
            )
        time.sleep(0.01)


def bench_rows(names: list[str], assignments: list[str], setup: BenchSetup, runs_per_gpu: int = 1) -> list[BenchRow]:
    """One row per method; `runs_per_gpu` above 1 runs that many bench processes packed together."""
    options = parse_assignments(assignments)
    check_keys(options, [get_method(name) for name in names])
    check_setup(setup)
    if runs_per_gpu > 1:
        return combine_packed(packed(packed_arguments(names, assignments, setup), runs_per_gpu))
    return [
        bench_method(name, setup, {k: v for k, v in options.items() if k in get_method(name).option_fields()})
        for name in names
    ]


def packed_arguments(names: list[str], assignments: list[str], setup: BenchSetup) -> list[str]:
    """The `peftbench bench` arguments of one packed process measuring `setup`."""
    return (
        [f"--method={name}" for name in names]
        + [f"--set={item}" for item in assignments]
        + [
            f"--model={setup.model}",
            f"--batch-size={setup.batch_size}",
            f"--eval-batch-size={setup.eval_batch_size}",
            f"--steps={setup.steps}",
            f"--warmup={setup.warmup}",
            f"--eval-batches={setup.eval_batches}",
            f"--stored-size={setup.stored_size}",
            f"--device={setup.device.type}",
        ]
        + (["--compile"] if setup.compile else [])
    )


def estimate_for(suite: str | None, epochs: int | None) -> tuple[Suite | None, int]:
    """The suite whose time `--suite` estimates, and the epochs of the estimate (default: the suite's)."""
    chosen = get_suite(suite) if suite else None
    return chosen, epochs or (chosen.defaults.get("epochs", 100) if chosen else 0)


def parse_barrier(text: str | None) -> tuple[str, int] | None:
    """`FOLDER:N` -> (folder, n): the packed processes start their timed steps together."""
    if not text:
        return None
    folder, _, peers = text.rpartition(":")
    return folder, int(peers)


def describe_setup(setup: BenchSetup, runs_per_gpu: int) -> str:
    """The line under the Markdown table: device, model, batches, precision, packing, steps."""
    precision = "bf16 autocast" if setup.device.type == "cuda" else "fp32"
    packing = f", {runs_per_gpu} runs packed (aggregate training images/s)" if runs_per_gpu > 1 else ""
    return (
        f"{provenance.device_name(setup.device)}; {setup.model}, random weights, batch {setup.batch_size}, eval batch "
        f"{setup.eval_size}, {precision}{', torch.compile' if setup.compile else ''}{packing}; "
        f"{setup.steps} timed steps after {setup.warmup}. Peak memory: CUDA max allocated while training "
        "(not measured on the CPU)."
    )


def packed(arguments: list[str], runs: int) -> list[list[BenchRow]]:
    """Run `runs` copies of `peftbench bench <arguments> --format json` at once; each one's rows."""
    with tempfile.TemporaryDirectory(prefix="peftbench-bench-") as folder:
        command = [
            sys.executable,
            "-m",
            "peftbench",
            "bench",
            *arguments,
            "--format",
            "json",
            "--barrier",
            f"{folder}:{runs}",
        ]
        processes = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(runs)]
        outputs = [p.communicate()[0] for p in processes]
    if any(p.returncode for p in processes):
        raise PeftbenchError(f"bench: a packed process failed (exit codes {[p.returncode for p in processes]})")
    return [[row_from_json(r) for r in json.loads(out)["rows"]] for out in outputs]


def combine_packed(runs: list[list[BenchRow]]) -> list[BenchRow]:
    """Per method, the packed processes' training images over the span of their timed windows;
    evaluation figures are the mean per process (evaluation is not packed)."""
    combined = []
    for rows in zip(*runs):
        images = sum(r.train_images_per_second * (r.train_window[1] - r.train_window[0]) for r in rows)
        span = max(r.train_window[1] for r in rows) - min(r.train_window[0] for r in rows)
        merged = [r.merged_eval_images_per_second for r in rows if r.merged_eval_images_per_second]
        peaks = [r.peak_memory_mb for r in rows if r.peak_memory_mb is not None]
        window = (min(r.train_window[0] for r in rows), max(r.train_window[1] for r in rows))
        combined.append(
            dataclasses.replace(
                rows[0],
                train_images_per_second=images / span,
                train_window=window,
                eval_images_per_second=sum(r.eval_images_per_second for r in rows) / len(rows),
                merged_eval_images_per_second=sum(merged) / len(merged) if merged else None,
                peak_memory_mb=sum(peaks) if peaks else None,
            )
        )
    return combined


def row_from_json(data: dict[str, Any]) -> BenchRow:
    return BenchRow(**{**data, "train_window": tuple(data["train_window"])})


def suite_seconds(row: BenchRow, suite: Suite, epochs: int) -> float:
    """The suite's time for one seed at these rates: every task's training images × epochs, the
    cached path's one backbone pass per training image, and one pass over every test split."""
    train = sum(task.splits[suite.train_split] for task in suite.tasks)
    test = sum(task.splits[suite.eval_split] for task in suite.tasks)
    seconds = train * epochs / row.train_images_per_second
    if row.path == "cached features":
        seconds += train / row.eval_images_per_second
    return seconds + test / (row.merged_eval_images_per_second or row.eval_images_per_second)


def table(rows: list[BenchRow], suite: Suite | None = None, epochs: int = 0) -> tuple[list[str], list[list[str]]]:
    """Headers and cells of the Markdown table."""
    headers = ["method", "path", "trainable (w/o head)", "train img/s", "eval img/s", "merged eval img/s", "peak MB"]
    if suite is not None:
        headers.append(f"{suite.name} min ({epochs} ep)")
    cells = []
    for r in rows:
        line = [
            r.method,
            r.path,
            f"{r.trainable:,} ({r.trainable_without_head:,})",
            _rate(r.train_images_per_second),
            _rate(r.eval_images_per_second),
            _rate(r.merged_eval_images_per_second),
            "—" if r.peak_memory_mb is None else f"{r.peak_memory_mb:,.0f}",
        ]
        if suite is not None:
            line.append(f"{suite_seconds(r, suite, epochs) / 60:.1f}")
        cells.append(line)
    return headers, cells


def _rate(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def as_json(rows: list[BenchRow], setup: BenchSetup, suite: Suite | None, epochs: int, runs_per_gpu: int = 1) -> str:
    payload = {
        "device": provenance.device_name(setup.device),
        "runs_per_gpu": runs_per_gpu,
        "setup": {
            k: (str(v) if isinstance(v, torch.device) else v)
            for k, v in dataclasses.asdict(setup).items()
            if k != "barrier"
        },
        "versions": provenance.versions(),
        "rows": [dataclasses.asdict(r) for r in rows],
    }
    if suite is not None:
        payload["suite"] = {
            "name": suite.name,
            "epochs": epochs,
            "minutes": {r.method: suite_seconds(r, suite, epochs) / 60 for r in rows},
        }
    return json.dumps(payload, indent=2, allow_nan=False)


def check_setup(setup: BenchSetup) -> None:
    for name in ("batch_size", "steps", "warmup", "eval_batches"):
        if getattr(setup, name) < 1:
            raise PeftbenchError(f"bench: --{name.replace('_', '-')} must be at least 1, got {getattr(setup, name)}")
