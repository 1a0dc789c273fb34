"""The `peftbench` command: every command parses, calls one room below and prints; no logic of its own."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import os
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Optional, get_type_hints

import typer
from rich.console import Console
from rich.table import Table

from .errors import PeftbenchError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Benchmark parameter-efficient fine-tuning methods on Vision Transformers (VTAB-1k, FGVC, demo).",
)
console = Console()

DEFAULT_RESULTS = Path("results")


def _data_root_default() -> Path:
    return Path(os.environ.get("PEFTBENCH_DATA", "data"))


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print a one-line error on stderr and return the exit to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


ReportFormat = Enum("ReportFormat", {name: name for name in ("md", "csv", "json", "latex", "html")}, type=str)
TableFormat = Enum("TableFormat", {name: name for name in ("md", "json")}, type=str)
Listing = Enum("Listing", {name: name for name in ("methods", "tasks", "suites", "recipes")}, type=str)
Launcher = Enum("Launcher", {name: name for name in ("local", "slurm")}, type=str)
Reference = Enum("Reference", {name: name for name in ("none", "paper")}, type=str)
DataFormat = Enum("DataFormat", {name: name for name in ("auto", "vtab-lists", "tfds", "hf")}, type=str)
DATA_FORMAT_HELP = (
    "vtab-lists: the suite's list files (or FGVC JSON); tfds: VTAB-1k as TFDS tfrecords "
    "(<data-root>/<dataset>/<version>/); hf: Hugging Face dataset files per task folder (parquet, e.g. "
    "<task>/data/<split>-00000-of-00001.parquet, or a save_to_disk folder; needs peftbench[hf]); "
    "auto: tfds when a <dataset>/<version>/dataset_info.json is there, hf when a task folder holds "
    "parquet files or a dataset_dict.json."
)

DATA_ROOT_HELP = "Folder holding the suite's task folders (env: PEFTBENCH_DATA; default: ./data)."
SET_HELP = "Override a setting or method option: key=value (repeatable), e.g. lr=1e-3 or rank=4."


def cli_option(default: Any, *names: str, help: str) -> Any:
    """A dataclass field that `grouped_options` turns into a Typer option."""
    return dataclasses.field(metadata={"option": typer.Option(default, *names, help=help)})


def grouped_options(*groups: type) -> Callable:
    """Expose the fields of the dataclasses `groups` as one command's options; the command receives
    one instance of each group, in order."""

    def decorate(command: Callable) -> Callable:
        parameters = [
            inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.metadata["option"], annotation=kind)
            for group in groups
            for f, kind in ((f, get_type_hints(group)[f.name]) for f in dataclasses.fields(group))
        ]

        @functools.wraps(command)
        def parsed(**values: Any) -> Any:
            return command(*(group(**{f.name: values[f.name] for f in dataclasses.fields(group)}) for group in groups))

        parsed.__signature__ = inspect.Signature(parameters)
        parsed.__annotations__ = {p.name: p.annotation for p in parameters}
        return parsed

    return decorate


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """What `peftbench run` runs: the arguments of `RunRequest.from_options`."""

    methods: list[str] = cli_option(
        ...,
        "--method",
        "-m",
        help="Method name (repeatable), a pattern such as 'peft-*', or 'all' (every method whose optional dependency is installed).",
    )
    suite: str = cli_option(..., "--suite", "-s", help="Suite name: demo, vtab (vtab1k), fgvc.")
    tasks: Optional[list[str]] = cli_option(None, "--task", "-t", help="Only these tasks (repeatable); default: all.")
    protocol: str = cli_option(
        "default", "--protocol", "-p", help="default | paper | tune | best-test (see README: Protocols)."
    )
    grid: Optional[list[str]] = cli_option(
        None,
        "--grid",
        help="tune: values of one setting, e.g. lr=1e-3,5e-3 (repeatable); default: the method's or suite's grid.",
    )
    model: Optional[str] = cli_option(None, "--model", help="timm ViT name; default: the suite's backbone.")
    weights: Optional[Path] = cli_option(None, "--weights", help="Checkpoint to start from (.npz, .safetensors, .pth).")
    no_pretrained: bool = cli_option(False, "--no-pretrained", help="Start from random initialisation.")
    data_root: Path = cli_option(_data_root_default, "--data-root", help=DATA_ROOT_HELP)
    seed: Optional[list[int]] = cli_option(None, "--seed", help="Seed (repeatable); default 42.")
    seeds: Optional[int] = cli_option(None, "--seeds", help="The first N of VPT's seeds 42, 44, 82, 100, 800.")
    epochs: Optional[int] = cli_option(None, "--epochs", help="Training epochs (default: the suite's).")
    batch_size: Optional[int] = cli_option(None, "--batch-size", help="Training batch size (default: the suite's).")
    eval_every: int = cli_option(1, "--eval-every", help="best-test only: evaluate the test split every k epochs.")
    assignments: Optional[list[str]] = cli_option(None, "--set", help=SET_HELP)
    recipe: Optional[str] = cli_option(
        None,
        "--recipe",
        help="Preprocessing recipe (see `peftbench list recipes`); default: the suite's or the published one.",
    )
    device: Device = cli_option(Device.auto, "--device", help="Where to train.")
    cache_dir: Optional[Path] = cli_option(
        None, "--cache-dir", help="Decode-once image cache (env: PEFTBENCH_CACHE; default: the user cache folder)."
    )
    data_format: DataFormat = cli_option(DataFormat.auto, "--data-format", help=DATA_FORMAT_HELP)
    retry_failed: bool = cli_option(False, "--retry-failed", help="Rerun units whose record says failed.")
    force: bool = cli_option(False, "--force", help="Rerun every unit, finished or not.")
    compile: bool = cli_option(
        False, "--compile", help="torch.compile the training forward (pays off on long GPU runs)."
    )


@dataclasses.dataclass(frozen=True)
class LaunchOptions:
    """Where `peftbench run` writes and where its units run: the arguments of `launcher_from_options`."""

    out: Path = cli_option(DEFAULT_RESULTS, "--out", help="Results folder for the records.")
    launcher: Launcher = cli_option(
        Launcher.local, "--launcher", help="local: this machine; slurm: a job array through submitit."
    )
    workers: int = cli_option(1, "--workers", help="local: worker processes sharing the CPU; slurm: array tasks.")
    gpus: Optional[str] = cli_option(None, "--gpus", help="local: one worker per listed GPU, e.g. 0,1,2,3.")
    runs_per_gpu: int = cli_option(
        1, "--runs-per-gpu", help="Worker processes packed on each GPU (small runs do not fill one); local and slurm."
    )
    partition: Optional[str] = cli_option(None, "--partition", help="slurm: partition.")
    time: int = cli_option(24 * 60, "--time", help="slurm: time limit per array task, minutes.")
    gpus_per_node: int = cli_option(1, "--gpus-per-node", help="slurm: GPUs per array task.")
    array_parallelism: int = cli_option(64, "--array-parallelism", help="slurm: array tasks running at once.")
    wait: bool = cli_option(False, "--wait", help="slurm: wait for the array to finish.")


@app.command()
@grouped_options(RunOptions, LaunchOptions)
def run(what: RunOptions, where: LaunchOptions) -> None:
    """Train and evaluate methods on a suite's tasks under a protocol; one record per unit under --out.

    A rerun of the same command skips finished units and resumes the rest."""
    from .store import Store
    from .sweeps.launch import execute, launcher_from_options
    from .sweeps.progress import RichSweepProgress
    from .sweeps.request import RunRequest

    try:
        request = RunRequest.from_options(
            **{**vars(what), "device": what.device.value, "data_format": what.data_format.value}
        )
        launch = {k: v for k, v in vars(where).items() if k != "out"}
        launcher = launcher_from_options(**{**launch, "launcher": where.launcher.value}, listener=RichSweepProgress)
        outcome = execute(request, Store(where.out), launcher)
    except PeftbenchError as exc:
        raise fail(str(exc)) from None
    _print_outcome(outcome, where.out)


def _print_outcome(outcome, out: Path) -> None:
    """The sweep's summary line, its warnings and one error line per failed unit (exit 1 if any)."""
    from .sweeps.launch import Submission

    submission = outcome if isinstance(outcome, Submission) else outcome.submission
    if submission is not None:
        console.print(
            f"submitted job array {submission.job_id} ({submission.tasks} worker task(s)) for {submission.units} "
            f"unit(s); follow with: peftbench status --results {submission.results}"
            if submission.units
            else "nothing to submit: every unit has a record (--retry-failed / --force rerun them)"
        )
    if isinstance(outcome, Submission):
        return
    elsewhere = f", {len(outcome.elsewhere)} done meanwhile by another session" if outcome.elsewhere else ""
    console.print(
        f"{len(outcome.done)} unit(s) finished, {len(outcome.skipped)} skipped, {len(outcome.failed)} failed"
        f"{elsewhere}; records in {out}/"
    )
    if outcome.skipped_failed:
        typer.echo(
            f"error: {len(outcome.skipped_failed)} unit(s) failed in an earlier run and were skipped; "
            "--retry-failed reruns them",
            err=True,
        )
    for unit, reason in outcome.failed:
        typer.echo(f"error: {unit.label()}: {reason}", err=True)
    if outcome.failed or outcome.skipped_failed:
        raise typer.Exit(1)


@app.command()
def status(
    suite: Optional[str] = typer.Option(None, "--suite", "-s", help="Only this suite."),
    results: Path = typer.Option(DEFAULT_RESULTS, help="Results folder holding the sweeps."),
) -> None:
    """Done / failed / running / pending units per method and task, for every sweep under --results."""
    from .sweeps.status import STATES, summarise, sweep_states

    try:
        units = sweep_states(results, suite)
    except PeftbenchError as exc:
        raise fail(str(exc)) from None
    for (suite_name, protocol_name), part in summarise(units).groupby(["suite", "protocol"], sort=False):
        table = Table(title=f"{suite_name} · protocol {protocol_name}", title_justify="left")
        for header in ("method", "task", *STATES, "total"):
            table.add_column(header, no_wrap=True, justify="left" if header in ("method", "task") else "right")
        for row in part.itertuples(index=False):
            table.add_row(row.method, row.task, *(str(getattr(row, name)) for name in (*STATES, "total")))
        console.print(table)
    totals = units["state"].value_counts()
    console.print(", ".join(f"{totals.get(s, 0)} {s}" for s in STATES) + f" of {len(units)} unit(s)")


@app.command()
def report(
    suite: Optional[str] = typer.Option(
        None, "--suite", "-s", help="Only this suite (default: every suite with records)."
    ),
    results: Path = typer.Option(DEFAULT_RESULTS, help="Results folder to read records from."),
    out: Optional[Path] = typer.Option(None, help="Also write the report to this file."),
    format: ReportFormat = typer.Option(ReportFormat.md, "--format", "-f", help="Output format."),
    reference: Reference = typer.Option(Reference.none, help="paper: add the published rows and like-for-like deltas."),
    plot: Optional[Path] = typer.Option(None, help="Write mean accuracy against trainable parameters (.png or .svg)."),
    plot_time: Optional[Path] = typer.Option(None, help="Write mean accuracy against training time (.png or .svg)."),
    heatmap: Optional[Path] = typer.Option(None, help="Write per-task deltas against --baseline (.png or .svg)."),
    baseline: Optional[str] = typer.Option(None, help="The row the heat map compares with, e.g. linear."),
    plot_cd: Optional[Path] = typer.Option(
        None, help="Write the critical-difference diagram of all rows (Friedman, then Nemenyi; .png or .svg)."
    ),
    significance: Optional[str] = typer.Option(
        None, help="Mark cells that differ significantly from this row (McNemar, Holm), e.g. linear."
    ),
) -> None:
    """Render leaderboards from the records under --results (and plots with --plot / --heatmap)."""
    from .reports.make import PlotRequest, make_report

    try:
        text = make_report(
            results,
            suite,
            format.value,
            reference is Reference.paper,
            PlotRequest(plot, plot_time, heatmap, baseline, plot_cd),
            significance,
        )
    except PeftbenchError as exc:
        raise fail(str(exc)) from None
    typer.echo(text, nl=False)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)


@app.command()
def compare(
    method_a: str = typer.Argument(..., help="Method A, e.g. lora."),
    method_b: str = typer.Argument(..., help="Method B, the one A is compared with, e.g. linear."),
    suite: str = typer.Option(..., "--suite", "-s", help="Suite name: demo, vtab (vtab1k), fgvc."),
    protocol: Optional[str] = typer.Option(None, help="Protocol of the runs (default: the only one there is)."),
    model: Optional[str] = typer.Option(None, help="Backbone of the runs (default: the only one there is)."),
    results: Path = typer.Option(DEFAULT_RESULTS, help="Results folder to read records from."),
    resamples: int = typer.Option(10_000, help="Bootstrap resamples."),
    seed: int = typer.Option(0, help="Seed of the bootstrap."),
    alpha: float = typer.Option(0.05, help="Significance level after Holm's correction."),
    format: TableFormat = typer.Option(TableFormat.md, "--format", "-f", help="Output format."),
) -> None:
    """Per task: A − B in top-1 with a paired-bootstrap 95 % interval and McNemar's p; Holm-corrected wins, ties, losses."""
    from .reports.compare import compare as compare_methods
    from .reports.compare import render

    try:
        comparison = compare_methods(results, suite, method_a, method_b, protocol, model, resamples, seed, alpha)
    except PeftbenchError as exc:
        raise fail(str(exc)) from None
    typer.echo(render(comparison, "json" if format.value == "json" else "md"), nl=False)


@app.command()
def site(
    out: Path = typer.Option(Path("site"), help="Folder to write the site into (index.html at its top)."),
    results: Path = typer.Option(DEFAULT_RESULTS, help="Results folder to read records from."),
    faithfulness: Optional[Path] = typer.Option(
        None, help="FAITHFULNESS.md whose summary rows the method pages show (default: ./FAITHFULNESS.md if present)."
    ),
) -> None:
    """A static leaderboard site: sortable tables per suite × protocol × backbone, a page per method and task, plots."""
    from .listing import method_facts
    from .reports.faithfulness import read_faithfulness
    from .reports.site import build_site
    from .reports.site_data import MethodCard

    try:
        if faithfulness is None and Path("FAITHFULNESS.md").is_file():
            faithfulness = Path("FAITHFULNESS.md")
        rows = read_faithfulness(faithfulness) if faithfulness else None
        pages = build_site(results, out, [MethodCard(**facts) for facts in method_facts()], rows)
    except PeftbenchError as exc:
        raise fail(str(exc)) from None
    typer.echo(f"wrote {len(pages)} pages to {out} (open {out / 'index.html'})")


@app.command()
def params(
    suite: str = typer.Option(..., "--suite", "-s", help="Suite whose tasks set the head sizes."),
    method: Optional[list[str]] = typer.Option(None, "--method", "-m", help="Method (repeatable); default: all."),
    model: Optional[str] = typer.Option(None, help="timm ViT name; default: the suite's backbone."),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="Method option: key=value (repeatable), e.g. rank=4."),
    format: TableFormat = typer.Option(TableFormat.md, "--format", "-f", help="Output format."),
) -> None:
    """Exact trainable parameters per method, with and without the head, per task and averaged (no data or weights needed)."""
    from .params import suite_counts

    try:
        text = suite_counts(suite, method or ["all"], model, set_ or [], format.value)
    except PeftbenchError as exc:
        raise fail(str(exc)) from None
    typer.echo(text, nl=False)


@app.command()
def bench(
    method: Optional[list[str]] = typer.Option(
        None, "--method", "-m", help="Method (repeatable), or 'all'; default: linear, lora, ssf, rlrr."
    ),
    model: str = typer.Option("vit_base_patch16_224", help="timm ViT name (random weights)."),
    batch_size: int = typer.Option(64, help="Training batch size."),
    eval_batch_size: int = typer.Option(0, help="Evaluation batch size; 0: 4 × --batch-size."),
    steps: int = typer.Option(10, help="Timed training steps per method."),
    warmup: int = typer.Option(2, help="Untimed training steps first."),
    eval_batches: int = typer.Option(4, help="Timed evaluation batches per method."),
    stored_size: int = typer.Option(
        0,
        help="Side of the synthetic stored images; 0: the model's input (smaller ones are resized per batch, as native VTAB images).",
    ),
    device: Device = typer.Option(Device.auto, help="Where to measure."),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the training forward."),
    runs_per_gpu: int = typer.Option(
        1, help="Measure this many bench processes packed together (aggregate training images/s)."
    ),
    suite: Optional[str] = typer.Option(
        None, "--suite", "-s", help="Also estimate this suite's time per method (one seed) from the rates."
    ),
    epochs: Optional[int] = typer.Option(None, help="Epochs for the estimate; default: the suite's."),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="Method option: key=value (repeatable), e.g. rank=4."),
    format: TableFormat = typer.Option(TableFormat.md, "--format", "-f", help="Output format."),
    barrier: Optional[str] = typer.Option(
        None, hidden=True, help="FOLDER:N (packed processes start their timed steps together)."
    ),
) -> None:
    """Per method: training and evaluation images/s (merged and unmerged), peak memory and trainable
    parameters, on synthetic inputs with random weights (no dataset needed)."""
    from . import bench as bench_lib
    from .engine import resolve_device
    from .methods import resolve_method_names

    try:
        names = resolve_method_names(method or ["linear", "lora", "ssf", "rlrr"])
        chosen, estimate_epochs = bench_lib.estimate_for(suite, epochs)
        setup = bench_lib.BenchSetup(
            model,
            batch_size,
            resolve_device(device.value),
            steps,
            warmup,
            eval_batches,
            eval_batch_size,
            stored_size=stored_size,
            compile=compile,
            barrier=bench_lib.parse_barrier(barrier),
        )
        rows = bench_lib.bench_rows(names, set_ or [], setup, runs_per_gpu)
    except PeftbenchError as exc:
        raise fail(str(exc)) from None
    if format is TableFormat.json:
        typer.echo(bench_lib.as_json(rows, setup, chosen, estimate_epochs, runs_per_gpu))
        return
    from tabulate import tabulate

    headers, cells = bench_lib.table(rows, chosen, estimate_epochs)
    typer.echo(tabulate(cells, headers, tablefmt="github", disable_numparse=True))
    typer.echo("\n" + bench_lib.describe_setup(setup, runs_per_gpu))


data_app = typer.Typer(no_args_is_help=True, help="Inspect the data a suite needs.")
app.add_typer(data_app, name="data")


@data_app.command("check")
def data_check(
    suite: str = typer.Option(..., "--suite", "-s", help="Suite to check: vtab (vtab1k), fgvc, demo."),
    data_root: Path = typer.Option(_data_root_default, help=DATA_ROOT_HELP),
    deep: bool = typer.Option(False, "--deep", help="Also open and decode every image (slow on the real suites)."),
    data_format: DataFormat = typer.Option(DataFormat.auto, "--data-format", help=DATA_FORMAT_HELP),
) -> None:
    """One row per task: found or missing, split sizes against the expected ones, labels; exit 1 on errors."""
    from .data.check import check_suite_data, render_table

    try:
        chosen, reports = check_suite_data(suite, data_root, deep, data_format.value)
    except PeftbenchError as exc:
        raise fail(str(exc)) from None
    console.print(render_table(reports))
    for report in reports:
        for warning in report.warnings:
            typer.echo(f"warning: {warning}", err=True)
        for error in report.errors:
            typer.echo(f"error: {error}", err=True)
    failed = [r.task.name for r in reports if r.status == "error"]
    if failed:
        typer.echo(f"error: {len(failed)} task(s) cannot be run: {', '.join(failed)}", err=True)
        raise typer.Exit(1)
    console.print(f"{len(reports)} task(s) ready under {chosen.data_dir(data_root)}")


@app.command("list")
def list_(
    what: Listing = typer.Argument(..., help="methods, tasks, suites or recipes"),
    suite: Optional[str] = typer.Option(None, "--suite", "-s", help="With 'tasks': only this suite."),
) -> None:
    """List the methods, suites, tasks or preprocessing recipes peftbench knows."""
    from . import listing

    try:
        headers, rows, caption = listing.LISTINGS[what.value](suite)
    except PeftbenchError as exc:
        raise fail(str(exc)) from None
    table = Table(caption=caption)
    for header in headers:
        table.add_column(header, no_wrap=header in ("suite", "task", "group", "classes", "split sizes", "method"))
    for row in rows:
        table.add_row(*row)
    console.print(table)


@app.command()
def describe(
    method: str = typer.Argument(..., help="A method name (see `peftbench list methods`)."),
    model: str = typer.Option("vit_base_patch16_224", help="timm ViT whose trainable parameters are counted."),
) -> None:
    """A method's summary, paper and equation, options with defaults, trainable parameters and merge support."""
    from .listing import describe_method

    try:
        text = describe_method(method, model)
    except PeftbenchError as exc:
        raise fail(str(exc)) from None
    typer.echo(text, nl=False)


def main() -> None:
    app()
