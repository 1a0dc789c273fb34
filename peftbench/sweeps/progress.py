"""Rich progress for a sweep: an overall bar over runs and one bar for the run in progress."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..record import Record
from .protocols import Unit
from .work import SweepListener


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
        self.skipped = 0

    def __enter__(self) -> RichSweepProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._report_skipped()
        self.progress.stop()

    def _report_skipped(self) -> None:
        if self.skipped:
            self.console.print(
                f"[dim]skip[/dim] {self.skipped} unit(s) with a record already "
                "(--retry-failed reruns failed ones, --force all)"
            )
            self.skipped = 0

    def run_skipped(self, unit: Unit) -> None:
        self.progress.advance(self.sweep)
        self.skipped += 1

    def run_started(self, unit: Unit) -> None:
        self._report_skipped()
        self.label = unit.label()
        self.run = self.progress.add_task(self.label, total=None)

    def start(self, total_steps: int) -> None:
        self.progress.update(self.run, total=total_steps, completed=0)

    def advance(self, steps: int, epoch: int, loss: float | None) -> None:
        self.progress.update(self.run, advance=steps, description=f"{self.label}  epoch {epoch}  loss {loss:.3f}")

    def run_finished(self, unit: Unit, record: Record) -> None:
        if self.run is not None:
            self.progress.remove_task(self.run)
            self.run = None
        self.progress.advance(self.sweep)
        if record.ok:
            self.console.print(
                f"[green]ok[/green]   {unit.label()}: {record.metrics.split} top-1 {record.metrics.top1:.1f} % "
                f"in {record.timing.wall_seconds:.1f} s"
            )
        else:
            self.console.print(f"[red]failed[/red] {unit.label()}: {record.reason}", soft_wrap=True)
