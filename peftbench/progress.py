"""Rich progress for a sweep: an overall bar over runs and one bar for the run in progress."""
from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from .spec import RunSpec
from .sweep import SweepListener


class RichSweepProgress(SweepListener):
    """Draws the sweep on `console` (stderr by default) and prints one line per finished run."""

    def __init__(self, total_runs: int, console: Console | None = None):
        self.console = console or Console(stderr=True)
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        )
        self.sweep = self.progress.add_task("sweep", total=total_runs)
        self.run: int | None = None
        self.label = ""

    def __enter__(self) -> RichSweepProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def run_skipped(self, spec: RunSpec) -> None:
        self.progress.advance(self.sweep)
        self.console.print(f"[dim]skip[/dim] {spec.label()} (finished record exists; --force reruns it)")

    def run_started(self, spec: RunSpec) -> None:
        self.label = spec.label()
        self.run = self.progress.add_task(self.label, total=None)

    def start(self, total_steps: int) -> None:
        self.progress.update(self.run, total=total_steps, completed=0)

    def advance(self, steps: int, epoch: int, loss: float | None) -> None:
        self.progress.update(self.run, advance=steps, description=f"{self.label}  epoch {epoch}  loss {loss:.3f}")

    def run_finished(self, spec: RunSpec, record: dict[str, Any]) -> None:
        self.progress.remove_task(self.run)
        self.progress.advance(self.sweep)
        if record["status"] == "ok":
            top1 = record["metrics"]["test_top1"]
            self.console.print(f"[green]ok[/green]   {spec.label()}: top-1 {top1:.1f} % in {record['wall_seconds']:.1f} s")
        else:
            self.console.print(f"[red]failed[/red] {spec.label()}: {record['reason']}", soft_wrap=True)
