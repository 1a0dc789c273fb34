"""The `peftbench` command: parses, prints, and calls the rooms below; no logic of its own."""
from __future__ import annotations

import os
from enum import Enum
from pathlib import Path
from typing import Optional

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


class ReportFormat(str, Enum):
    md = "md"
    csv = "csv"
    json = "json"
    latex = "latex"
    html = "html"


class ParamsFormat(str, Enum):
    md = "md"
    json = "json"


class Listing(str, Enum):
    methods = "methods"
    tasks = "tasks"
    suites = "suites"
    recipes = "recipes"


class Launcher(str, Enum):
    local = "local"
    slurm = "slurm"


@app.command()
def run(
    method: list[str] = typer.Option(..., "--method", "-m", help="Method name (repeatable), or 'all'."),
    suite: str = typer.Option(..., "--suite", "-s", help="Suite name: demo, vtab (vtab1k), fgvc."),
    task: Optional[list[str]] = typer.Option(None, "--task", "-t", help="Only these tasks (repeatable); default: all."),
    protocol: str = typer.Option("default", "--protocol", "-p", help="default | paper | tune | best-test (see README: Protocols)."),
    grid: Optional[list[str]] = typer.Option(None, "--grid", help="tune: values of one setting, e.g. lr=1e-3,5e-3 (repeatable); default: the method's or suite's grid."),
    model: Optional[str] = typer.Option(None, help="timm ViT name; default: the suite's backbone."),
    weights: Optional[Path] = typer.Option(None, help="Checkpoint to start from (.npz, .safetensors, .pth)."),
    no_pretrained: bool = typer.Option(False, "--no-pretrained", help="Start from random initialisation."),
    data_root: Path = typer.Option(_data_root_default, help="Folder holding the suite's task folders [env: PEFTBENCH_DATA; default: ./data]."),
    seed: Optional[list[int]] = typer.Option(None, "--seed", help="Seed (repeatable); default 42."),
    seeds: Optional[int] = typer.Option(None, "--seeds", help="The first N of VPT's seeds 42, 44, 82, 100, 800."),
    epochs: Optional[int] = typer.Option(None, help="Training epochs (default: the suite's)."),
    batch_size: Optional[int] = typer.Option(None, help="Training batch size (default: the suite's)."),
    eval_every: int = typer.Option(1, help="best-test only: evaluate the test split every k epochs."),
    device: Device = typer.Option(Device.auto, help="Where to train."),
    out: Path = typer.Option(DEFAULT_RESULTS, help="Results folder for the records."),
    cache_dir: Optional[Path] = typer.Option(None, help="Decode-once image cache [env: PEFTBENCH_CACHE; default: the user cache folder]."),
    recipe: Optional[str] = typer.Option(None, help="Preprocessing recipe (see `peftbench list recipes`); default: the suite's or the published one."),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="Override a setting: key=value (repeatable), e.g. lr=1e-3."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Rerun units whose record says failed."),
    force: bool = typer.Option(False, help="Rerun every unit, finished or not."),
    launcher: Launcher = typer.Option(Launcher.local, help="local: this machine; slurm: a job array through submitit."),
    workers: int = typer.Option(1, help="local: worker processes sharing the CPU; slurm: array tasks."),
    gpus: Optional[str] = typer.Option(None, help="local: one worker per listed GPU, e.g. 0,1,2,3."),
    runs_per_gpu: int = typer.Option(1, help="Worker processes packed on each GPU (small runs do not fill one); local and slurm."),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the training forward (pays off on long GPU runs)."),
    partition: Optional[str] = typer.Option(None, help="slurm: partition."),
    time: int = typer.Option(24 * 60, "--time", help="slurm: time limit per array task, minutes."),
    gpus_per_node: int = typer.Option(1, help="slurm: GPUs per array task."),
    array_parallelism: int = typer.Option(64, help="slurm: array tasks running at once."),
    wait: bool = typer.Option(False, help="slurm: wait for the array to finish."),
) -> None:
    """Train and evaluate methods on a suite's tasks under a protocol; one record per unit under --out.

    A rerun of the same command skips finished units and resumes the rest."""
    from .data import prepare_suite_data
    from .data.recipes import get_recipe
    from .protocols import check_protocol, seeds_from
    from .registry import resolve_method_names
    from .request import RunRequest
    from .settings import parse_assignments
    from .store import Store
    from .suites import get_suite
    from .sweep import open_session, plan
    from .tuning import parse_grid

    try:
        if weights is not None and no_pretrained:
            raise PeftbenchError("--weights and --no-pretrained exclude each other; give one")
        chosen = get_suite(suite)
        overrides = parse_assignments(set_ or [])
        overrides.update({k: v for k, v in (("epochs", epochs), ("batch_size", batch_size)) if v is not None})
        if grid and protocol != "tune":
            raise PeftbenchError("--grid applies to --protocol tune only")
        if eval_every < 1:
            raise PeftbenchError(f"--eval-every must be at least 1, got {eval_every}")
        if workers < 1 or runs_per_gpu < 1:
            raise PeftbenchError(f"--workers and --runs-per-gpu must be at least 1, got {workers} and {runs_per_gpu}")
        request = RunRequest(
            suite=chosen,
            tasks=chosen.select(task),
            methods=resolve_method_names(method),
            model=model or chosen.model,
            weights=None if no_pretrained else (str(weights) if weights else "default"),
            seeds=seeds_from(seed, seeds),
            overrides=overrides,
            data_root=data_root,
            device=device.value,
            force=force,
            cache_dir=cache_dir,
            recipe=get_recipe(recipe).name if recipe else None,
            protocol=check_protocol(protocol),
            grid=parse_grid(grid or []),
            eval_every=eval_every if protocol == "best-test" else 1,
            retry_failed=retry_failed,
            compile=compile,
        )
        gpu_list = _gpu_list(gpus, runs_per_gpu if launcher is Launcher.local else 1)
        store = Store(out)
        units = plan(request)
        prepare_suite_data(request.suite, request.tasks, request.data_root)
        session = open_session(request, store, units)
        if launcher is Launcher.slurm:
            _submit(session, workers, len(session.todo), partition, time, gpus_per_node, array_parallelism, wait,
                    runs_per_gpu)
            if not wait:
                return
            outcome = _outcome(session, units, store)
        elif workers > 1 or gpu_list:
            from .launch import run_local_workers, worker_shares

            run_local_workers(session, worker_shares(workers, gpu_list, runs_per_gpu))
            outcome = _outcome(session, units, store)
        else:
            from .progress import RichSweepProgress
            from .sweep import work

            with RichSweepProgress(len(units)) as progress:
                outcome = work(request, store, session, progress, units)
    except PeftbenchError as exc:
        raise fail(str(exc)) from None
    console.print(
        f"{len(outcome.done)} unit(s) finished, {len(outcome.skipped)} skipped, {len(outcome.failed)} failed; records in {out}/"
    )
    if outcome.skipped_failed:
        typer.echo(f"warning: {len(outcome.skipped_failed)} unit(s) failed in an earlier run and were skipped; "
                   "--retry-failed reruns them", err=True)
    for unit, reason in outcome.failed:
        typer.echo(f"error: {unit.label()}: {reason}", err=True)
    if outcome.failed:
        raise typer.Exit(1)


def _gpu_list(gpus: Optional[str], runs_per_gpu: int = 1) -> list[int]:
    """The --gpus numbers; with --runs-per-gpu above 1 and no --gpus, every visible GPU."""
    if not gpus and runs_per_gpu > 1:
        import torch

        if not torch.cuda.device_count():
            raise PeftbenchError("--runs-per-gpu packs runs on CUDA devices and torch sees none; on the CPU use --workers N")
        return list(range(torch.cuda.device_count()))
    if not gpus:
        return []
    try:
        return [int(g) for g in gpus.split(",")]
    except ValueError:
        raise PeftbenchError(f"--gpus expects device numbers like 0,1,2, got '{gpus}'") from None


def _outcome(session, units, store):
    from .launch import outcome_of

    return outcome_of(session, units, store)


def _submit(session, workers, todo, partition, time, gpus_per_node, array_parallelism, wait, runs_per_gpu) -> None:
    from .launch import SlurmOptions, submit_slurm

    if not todo:
        console.print("nothing to submit: every unit has a record (--retry-failed / --force rerun them)")
        return
    per_task = max(1, gpus_per_node) * runs_per_gpu  # worker processes in one array task
    tasks = workers if workers > 1 else min(-(-todo // per_task), array_parallelism)
    options = SlurmOptions(tasks, partition, time, gpus_per_node, array_parallelism, runs_per_gpu,
                           cluster=os.environ.get("PEFTBENCH_SUBMITIT_CLUSTER"))
    jobs = submit_slurm(session, options)
    console.print(f"submitted job array {jobs[0].job_id.split('_')[0]} ({tasks} worker task(s)) for {todo} unit(s); "
                  f"follow with: peftbench status --results {session.root}")
    if wait:
        for job in jobs:
            job.result()


@app.command()
def status(
    suite: Optional[str] = typer.Option(None, "--suite", "-s", help="Only this suite."),
    results: Path = typer.Option(DEFAULT_RESULTS, help="Results folder holding the sweeps."),
) -> None:
    """Done / failed / running / pending units per method and task, for every sweep under --results."""
    from .status import STATES, summarise, unit_states
    from .suites import get_suite

    try:
        name = get_suite(suite).name if suite else None
        if not results.is_dir():
            raise PeftbenchError(f"results folder {results} does not exist; run `peftbench run` first or pass --results")
        units = unit_states(results, name)
        if units.empty:
            raise PeftbenchError(f"no sweep manifests under {results}/.sweeps" + (f" for suite {name}" if name else ""))
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


class Reference(str, Enum):
    none = "none"
    paper = "paper"


@app.command()
def report(
    suite: Optional[str] = typer.Option(None, "--suite", "-s", help="Only this suite (default: every suite with records)."),
    results: Path = typer.Option(DEFAULT_RESULTS, help="Results folder to read records from."),
    out: Optional[Path] = typer.Option(None, help="Also write the report to this file."),
    format: ReportFormat = typer.Option(ReportFormat.md, "--format", "-f", help="Output format."),
    reference: Reference = typer.Option(Reference.none, help="paper: add the published rows and like-for-like deltas."),
    plot: Optional[Path] = typer.Option(None, help="Write mean accuracy against trainable parameters (.png or .svg)."),
    plot_time: Optional[Path] = typer.Option(None, help="Write mean accuracy against training time (.png or .svg)."),
    heatmap: Optional[Path] = typer.Option(None, help="Write per-task deltas against --baseline (.png or .svg)."),
    baseline: Optional[str] = typer.Option(None, help="The row the heat map compares with, e.g. linear."),
) -> None:
    """Render leaderboards from the records under --results (and plots with --plot / --heatmap)."""
    from .report import TRAIN_TIME, build_leaderboard, render, runs_frame
    from .store import Store
    from .suites import all_suites, get_suite

    try:
        suites = [get_suite(suite)] if suite else list(all_suites().values())
        if not results.is_dir():
            raise PeftbenchError(f"results folder {results} does not exist; run `peftbench run` first or pass --results")
        if (plot or plot_time or heatmap) and len(suites) != 1:
            raise PeftbenchError("--plot, --plot-time and --heatmap need one --suite")
        if heatmap and not baseline:
            raise PeftbenchError("--heatmap needs --baseline ROW, e.g. --baseline linear")
        runs = runs_frame(Store(results).records())
        boards = [build_leaderboard(runs, s) for s in suites]
        if not suite:
            boards = [b for b in boards if not b.is_empty]
        if not boards or boards[0].is_empty:
            raise PeftbenchError(f"no finished records under {results}" + (f" for suite {suite}" if suite else ""))
        if plot or plot_time or heatmap:
            from . import plots

            if plot:
                plots.pareto_plot(boards[0], plot)
            if plot_time:
                minutes = boards[0].efficiency[TRAIN_TIME].dropna()
                plots.accuracy_vs_time_plot(boards[0], (minutes * 60).to_dict(), plot_time)
            if heatmap:
                plots.delta_heatmap(boards[0], baseline, heatmap)
        if reference is Reference.paper:
            from .references import with_published

            boards = [with_published(b) for b in boards]
    except PeftbenchError as exc:
        raise fail(str(exc)) from None
    text = "\n".join(render(b, format.value) for b in boards)
    typer.echo(text, nl=False)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)


@app.command()
def params(
    suite: str = typer.Option(..., "--suite", "-s", help="Suite whose tasks set the head sizes."),
    method: Optional[list[str]] = typer.Option(None, "--method", "-m", help="Method (repeatable); default: all."),
    model: Optional[str] = typer.Option(None, help="timm ViT name; default: the suite's backbone."),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="Method option: key=value (repeatable), e.g. rank=4."),
    format: ParamsFormat = typer.Option(ParamsFormat.md, "--format", "-f", help="Output format."),
) -> None:
    """Exact trainable parameters per method, with and without the head, per task and averaged (no data or weights needed)."""
    from .params import count_trainable, render_counts
    from .registry import get_method, resolve_method_names
    from .settings import check_keys, parse_assignments
    from .suites import get_suite

    try:
        chosen = get_suite(suite)
        names = resolve_method_names(method or ["all"])
        overrides = parse_assignments(set_ or [])
        check_keys(overrides, [get_method(name) for name in names])
        model_name = model or chosen.model
        counts = [count_trainable(name, model_name, chosen, overrides) for name in names]
    except PeftbenchError as exc:
        raise fail(str(exc)) from None
    typer.echo(render_counts(counts, chosen, model_name, format.value), nl=False)


class BenchFormat(str, Enum):
    md = "md"
    json = "json"


@app.command()
def bench(
    method: Optional[list[str]] = typer.Option(None, "--method", "-m", help="Method (repeatable), or 'all'; default: linear, lora, ssf, rlrr."),
    model: str = typer.Option("vit_base_patch16_224", help="timm ViT name (random weights)."),
    batch_size: int = typer.Option(64, help="Training batch size."),
    eval_batch_size: int = typer.Option(0, help="Evaluation batch size; 0: 4 × --batch-size."),
    steps: int = typer.Option(10, help="Timed training steps per method."),
    warmup: int = typer.Option(2, help="Untimed training steps first."),
    eval_batches: int = typer.Option(4, help="Timed evaluation batches per method."),
    stored_size: int = typer.Option(0, help="Side of the synthetic stored images; 0: the model's input (smaller ones are resized per batch, as native VTAB images)."),
    device: Device = typer.Option(Device.auto, help="Where to measure."),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the training forward."),
    runs_per_gpu: int = typer.Option(1, help="Measure this many bench processes packed together (aggregate training images/s)."),
    suite: Optional[str] = typer.Option(None, "--suite", "-s", help="Also estimate this suite's time per method (one seed) from the rates."),
    epochs: Optional[int] = typer.Option(None, help="Epochs for the estimate; default: the suite's."),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="Method option: key=value (repeatable), e.g. rank=4."),
    format: BenchFormat = typer.Option(BenchFormat.md, "--format", "-f", help="Output format."),
    barrier: Optional[str] = typer.Option(None, hidden=True, help="FOLDER:N (packed processes start their timed steps together)."),
) -> None:
    """Per method: training and evaluation images/s (merged and unmerged), peak memory and trainable
    parameters, on synthetic inputs with random weights (no dataset needed)."""
    from . import bench as bench_lib
    from .engine import resolve_device
    from .provenance import device_name
    from .registry import get_method, resolve_method_names
    from .settings import check_keys, parse_assignments
    from .suites import get_suite

    try:
        names = resolve_method_names(method or ["linear", "lora", "ssf", "rlrr"])
        options = parse_assignments(set_ or [])
        check_keys(options, [get_method(name) for name in names])
        chosen = get_suite(suite) if suite else None
        estimate_epochs = epochs or (chosen.defaults.get("epochs", 100) if chosen else 0)
        folder, _, peers = (barrier or "").rpartition(":")
        setup = bench_lib.BenchSetup(model, batch_size, resolve_device(device.value), steps, warmup, eval_batches,
                                     eval_batch_size, stored_size=stored_size, compile=compile,
                                     barrier=(folder, int(peers)) if barrier else None)
        bench_lib.check_setup(setup)
        if runs_per_gpu > 1:
            arguments = [f"--method={name}" for name in names] + [f"--set={item}" for item in set_ or []] + [
                f"--model={model}", f"--batch-size={batch_size}", f"--eval-batch-size={eval_batch_size}",
                f"--steps={steps}", f"--warmup={warmup}", f"--eval-batches={eval_batches}",
                f"--stored-size={stored_size}", f"--device={device.value}"] + (["--compile"] if compile else [])
            rows = bench_lib.combine_packed(bench_lib.packed(arguments, runs_per_gpu))
        else:
            rows = []
            for name in names:
                method_options = {k: v for k, v in options.items() if k in get_method(name).option_fields()}
                rows.append(bench_lib.bench_method(name, setup, method_options))
    except PeftbenchError as exc:
        raise fail(str(exc)) from None
    if format is BenchFormat.json:
        typer.echo(bench_lib.as_json(rows, setup, chosen, estimate_epochs, runs_per_gpu))
        return
    from tabulate import tabulate

    headers, cells = bench_lib.table(rows, chosen, estimate_epochs)
    typer.echo(tabulate(cells, headers, tablefmt="github", disable_numparse=True))
    precision = "bf16 autocast" if setup.device.type == "cuda" else "fp32"
    packing = f", {runs_per_gpu} runs packed (aggregate training images/s)" if runs_per_gpu > 1 else ""
    typer.echo(f"\n{device_name(setup.device)}; {model}, random weights, batch {batch_size}, eval batch "
               f"{setup.eval_size}, {precision}{', torch.compile' if compile else ''}{packing}; "
               f"{steps} timed steps after {warmup}. Peak memory: CUDA max allocated while training (not measured on the CPU).")


data_app = typer.Typer(no_args_is_help=True, help="Inspect the data a suite needs.")
app.add_typer(data_app, name="data")


@data_app.command("check")
def data_check(
    suite: str = typer.Option(..., "--suite", "-s", help="Suite to check: vtab (vtab1k), fgvc, demo."),
    data_root: Path = typer.Option(_data_root_default, help="Folder holding the suite's task folders [env: PEFTBENCH_DATA; default: ./data]."),
    deep: bool = typer.Option(False, "--deep", help="Also open and decode every image (slow on the real suites)."),
) -> None:
    """One row per task: found or missing, split sizes against the expected ones, labels; exit 1 on errors."""
    from .data import prepare_suite_data
    from .data.check import check_suite, render_table
    from .suites import get_suite

    try:
        chosen = get_suite(suite)
        prepare_suite_data(chosen, list(chosen.tasks), data_root)
        reports = check_suite(chosen, data_root, deep)
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
    from .registry import all_methods
    from .suites import all_suites, get_suite

    try:
        suites = [get_suite(suite)] if suite else list(all_suites().values())
    except PeftbenchError as exc:
        raise fail(str(exc)) from None
    if what is Listing.methods:
        table = Table("method", "mergeable", "summary")
        for name, cls in all_methods().items():
            table.add_row(name, "yes" if cls.mergeable else "no", cls.summary)
    elif what is Listing.recipes:
        from .data.recipes import RECIPES

        table = Table("recipe", "resize", "scale", "crop", "hflip", "mean/std")
        for r in RECIPES.values():
            table.add_row(r.name, r.resize, f"{r.scale:.4g}", "yes" if r.crop else "no", "yes" if r.hflip else "no",
                          str(r.mean_std) if r.mean_std else "backbone's")
    elif what is Listing.suites:
        table = Table("suite", "aliases", "tasks", "layout", "backbone", "description")
        for s in suites:
            table.add_row(s.name, ", ".join(s.aliases), str(len(s.tasks)), s.layout, s.model, s.description)
    else:
        layouts = {"/".join(t.splits) for s in suites for t in s.tasks}
        table = Table(caption="split sizes: " + "; ".join(sorted(layouts)))
        for header in ("suite", "task", "aliases", "group", "classes", "split sizes"):
            table.add_column(header, no_wrap=header != "aliases")
        for s in suites:
            for t in s.tasks:
                sizes = "/".join(str(v) for v in t.splits.values())
                table.add_row(s.name, t.name, ", ".join(t.aliases), t.group, str(t.num_classes), sizes)
    console.print(table)


def main() -> None:
    app()
