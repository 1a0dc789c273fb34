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


class ParamsFormat(str, Enum):
    md = "md"
    json = "json"


class Listing(str, Enum):
    methods = "methods"
    tasks = "tasks"
    suites = "suites"


@app.command()
def run(
    method: list[str] = typer.Option(..., "--method", "-m", help="Method name (repeatable), or 'all'."),
    suite: str = typer.Option(..., "--suite", "-s", help="Suite name: demo, vtab (vtab1k), fgvc."),
    task: Optional[list[str]] = typer.Option(None, "--task", "-t", help="Only these tasks (repeatable); default: all."),
    model: Optional[str] = typer.Option(None, help="timm ViT name; default: the suite's backbone."),
    weights: Optional[Path] = typer.Option(None, help="Checkpoint to start from (.npz, .safetensors, .pth)."),
    no_pretrained: bool = typer.Option(False, "--no-pretrained", help="Start from random initialisation."),
    data_root: Path = typer.Option(_data_root_default, help="Folder holding the suite's task folders [env: PEFTBENCH_DATA; default: ./data]."),
    seed: list[int] = typer.Option([42], "--seed", help="Seed (repeatable)."),
    epochs: Optional[int] = typer.Option(None, help="Training epochs (default: the suite's)."),
    batch_size: Optional[int] = typer.Option(None, help="Training batch size (default: the suite's)."),
    device: Device = typer.Option(Device.auto, help="Where to train."),
    out: Path = typer.Option(DEFAULT_RESULTS, help="Results folder for the records."),
    cache_dir: Optional[Path] = typer.Option(None, help="Decode-once image cache [env: PEFTBENCH_CACHE; default: the user cache folder]."),
    recipe: Optional[str] = typer.Option(None, help="Preprocessing recipe (vtab-resize, vtab-resize-hflip, vpt-fgvc, rlrr-fgvc); default: the suite's."),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="Override a setting: key=value (repeatable), e.g. lr=1e-3."),
    force: bool = typer.Option(False, help="Rerun runs that already have a finished record."),
) -> None:
    """Train and evaluate methods on a suite's tasks; one record per run under --out."""
    from .data.recipes import get_recipe
    from .progress import RichSweepProgress
    from .registry import resolve_method_names
    from .settings import parse_assignments
    from .store import Store
    from .suites import get_suite
    from .sweep import RunRequest, execute, plan

    try:
        if weights is not None and no_pretrained:
            raise PeftbenchError("--weights and --no-pretrained exclude each other; give one")
        chosen = get_suite(suite)
        overrides = parse_assignments(set_ or [])
        overrides.update({k: v for k, v in (("epochs", epochs), ("batch_size", batch_size)) if v is not None})
        request = RunRequest(
            suite=chosen,
            tasks=chosen.select(task),
            methods=resolve_method_names(method),
            model=model or chosen.model,
            weights=None if no_pretrained else (weights or "default"),
            seeds=list(dict.fromkeys(seed)),
            overrides=overrides,
            data_root=data_root,
            device=device.value,
            force=force,
            cache_dir=cache_dir,
            recipe=get_recipe(recipe or chosen.recipe).name,
        )
        store = Store(out)
        with RichSweepProgress(len(plan(request))) as progress:
            outcome = execute(request, store, progress)
    except PeftbenchError as exc:
        raise fail(str(exc)) from None
    console.print(
        f"{len(outcome.done)} run(s) finished, {len(outcome.skipped)} skipped, {len(outcome.failed)} failed; records in {out}/"
    )
    for spec, reason in outcome.failed:
        typer.echo(f"error: {spec.label()}: {reason}", err=True)
    if outcome.failed:
        raise typer.Exit(1)


@app.command()
def report(
    suite: Optional[str] = typer.Option(None, "--suite", "-s", help="Only this suite (default: every suite with records)."),
    results: Path = typer.Option(DEFAULT_RESULTS, help="Results folder to read records from."),
    out: Optional[Path] = typer.Option(None, help="Also write the report to this file."),
    format: ReportFormat = typer.Option(ReportFormat.md, "--format", "-f", help="Output format."),
) -> None:
    """Render leaderboards from the records under --results."""
    from .report import build_leaderboard, render, runs_frame
    from .store import Store
    from .suites import all_suites, get_suite

    try:
        suites = [get_suite(suite)] if suite else list(all_suites().values())
        if not results.is_dir():
            raise PeftbenchError(f"results folder {results} does not exist; run `peftbench run` first or pass --results")
        runs = runs_frame(Store(results).records())
        boards = [build_leaderboard(runs, s) for s in suites]
        if not suite:
            boards = [b for b in boards if not b.is_empty]
        if not boards:
            raise PeftbenchError(f"no finished records under {results}")
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
    what: Listing = typer.Argument(..., help="methods, tasks or suites"),
    suite: Optional[str] = typer.Option(None, "--suite", "-s", help="With 'tasks': only this suite."),
) -> None:
    """List the methods, suites, or tasks peftbench knows."""
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
