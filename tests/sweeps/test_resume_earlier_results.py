"""A results folder written by the commit before the typed Record (d110afe) resumes unit by unit with
nothing rerun, and reports the same bytes in every format."""

import shutil
from pathlib import Path

import pytest
from conftest import write_vtab_task
from typer.testing import CliRunner

from peftbench.cli import app

FIXTURES = Path(__file__).parents[1] / "fixtures"
COMMANDS = [
    line.split()[1:]
    for line in (FIXTURES / "commands_d110afe.txt").read_text().splitlines()
    if line.startswith("peftbench run")
]
REPORTS = {"md": "report.md", "csv": "report.csv", "json": "report.json", "latex": "report.tex", "html": "report.html"}


@pytest.fixture
def earlier(tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the d110afe results folder and the data it was made from."""
    data = tmp_path / "data"
    write_vtab_task(data, "cifar")
    write_vtab_task(data, "dtd", num_classes=3, seed=1)
    results = tmp_path / "results_d110afe"
    shutil.copytree(FIXTURES / "results_d110afe", results)
    return data, results


def _record_bytes(results: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in results.glob("vtab1k/**/*.json")}


def test_every_unit_of_the_earlier_sweeps_is_skipped(earlier):
    data, results = earlier
    before = _record_bytes(results)
    options = [
        "--model",
        "vit_micro_patch4_32",
        "--no-pretrained",
        "--device",
        "cpu",
        "--data-root",
        str(data),
        "--out",
        str(results),
        "--batch-size",
        "16",
    ]
    skipped = []
    for command in COMMANDS:
        result = CliRunner().invoke(app, [*command, *options])
        assert result.exit_code == 0, result.output  # the units that failed then are skipped, not rerun
        assert "0 unit(s) finished" in result.stdout and " 0 failed" in result.stdout, result.output
        skipped.append(int(result.stdout.split(", ")[1].split()[0]))
    assert skipped == [12, 4, 1, 1] and sum(skipped) == len(before)
    assert _record_bytes(results) == before  # nothing rewritten
    assert len(list((results / ".sweeps").iterdir())) == 4  # the same sweeps: their ids did not change


@pytest.mark.parametrize("fmt", REPORTS)
def test_the_report_is_byte_for_byte_the_earlier_one(earlier, fmt: str):
    _, results = earlier
    result = CliRunner().invoke(app, ["report", "--suite", "vtab", "--results", str(results), "--format", fmt])
    assert result.exit_code == 0, result.output
    assert result.stdout == (FIXTURES / "reports_d110afe" / REPORTS[fmt]).read_text()


def test_the_report_with_published_rows_is_the_earlier_one(earlier):
    _, results = earlier
    result = CliRunner().invoke(app, ["report", "--suite", "vtab", "--results", str(results), "--reference", "paper"])
    assert result.stdout == (FIXTURES / "reports_d110afe" / "report.reference.md").read_text()
