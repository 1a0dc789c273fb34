"""A results folder written by the commit before the typed Record (d110afe) resumes unit by unit (every
unit that trains as it did then is skipped) and reports the same bytes in every format."""

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


OPTIONS = ["--model", "vit_micro_patch4_32", "--no-pretrained", "--device", "cpu", "--batch-size", "16"]


def _options(data: Path, results: Path) -> list[str]:
    return [*OPTIONS, "--data-root", str(data), "--out", str(results)]


def test_every_unit_whose_behaviour_did_not_change_is_skipped(earlier):
    """full, linear and ssf train as they did at d110afe: their 9 units (3 failed on missing data) resume as done."""
    data, results = earlier
    before = _record_bytes(results)
    command = ["run", "-m", "full", "-m", "linear", "-m", "ssf", "--suite", "vtab", "-t", "cifar100", "-t", "dtd",
               "-t", "eurosat", "--epochs", "1", "--set", "warmup_epochs=0"]  # fmt: skip
    result = CliRunner().invoke(app, [*command, *_options(data, results)])
    assert result.exit_code == 1, result.output  # the units that failed then are skipped, not rerun, and said so
    assert "3 unit(s) failed in an earlier run and were skipped" in result.stderr
    assert "0 unit(s) finished, 9 skipped, 0 failed" in result.stdout, result.output
    assert _record_bytes(results) == before  # nothing rewritten


def test_units_whose_behaviour_changed_since_have_new_keys_and_the_rest_keep_theirs(earlier):
    """The key rule at work: a run keeps its key exactly while it trains as before. Since d110afe, RLRR
    uses its element-wise drop path under every protocol, RLRR's paper recipe steps timm's scheduler per
    epoch in fp16, and LoRA's q and v draw their own dropout masks: those units are new; the rest are found."""
    from peftbench.store import Store
    from peftbench.sweeps.plan import plan
    from peftbench.sweeps.request import RunRequest

    data, results = earlier
    store, found, new = Store(results), set(), set()
    for command in COMMANDS:
        request = _request(RunRequest, command, data)
        for unit in plan(request):
            (found if store.get(unit.describe()) else new).add((unit.spec.method, unit.spec.protocol, unit.kind))
    assert found == {(m, "default", "run") for m in ("full", "linear", "ssf")}
    assert new == {("rlrr", "default", "run"), ("rlrr", "paper", "run"), ("lora", "tune", "trial"),
                   ("lora", "tune", "final"), ("lora", "best-test", "run")}  # fmt: skip


def _request(cls, command: list[str], data: Path):
    """The RunRequest a `peftbench run` command line of the fixture asks for."""
    args, values = iter(command[1:]), {"methods": [], "tasks": [], "assignments": []}
    names = {"-m": "methods", "-t": "tasks", "--set": "assignments", "--suite": "suite", "--protocol": "protocol",
             "--grid": "grid", "--seeds": "seeds", "--epochs": "epochs", "--eval-every": "eval_every"}  # fmt: skip
    for flag in args:
        value = next(args)
        name = names[flag]
        if isinstance(values.get(name), list):
            values[name].append(value)
        else:
            values[name] = (
                [value] if name == "grid" else int(value) if name in ("seeds", "epochs", "eval_every") else value
            )
    return cls.from_options(**values, data_root=data, model="vit_micro_patch4_32", no_pretrained=True, batch_size=16)


# The efficiency table that LaTeX and HTML reports gained after d110afe (issue O): from its opening (in LaTeX the
# second table*) to its close.
ADDED_SINCE = {
    "latex": ("\\begin{table*}", "\\end{table*}\n", 1),
    "html": ('<table class="efficiency">', "</table>\n", 0),
}


def without_added_sections(text: str, fmt: str) -> str:
    """`text` less the section added since d110afe (the rest must be byte for byte the earlier report)."""
    if fmt not in ADDED_SINCE:
        return text
    start, end, skip = ADDED_SINCE[fmt]
    at = text.index(start)
    for _ in range(skip):
        at = text.index(start, at + 1)
    return text[:at] + text[text.index(end, at) + len(end) :]


@pytest.mark.parametrize("fmt", REPORTS)
def test_the_report_is_byte_for_byte_the_earlier_one(earlier, fmt: str):
    _, results = earlier
    result = CliRunner().invoke(app, ["report", "--suite", "vtab", "--results", str(results), "--format", fmt])
    assert result.exit_code == 0, result.output
    assert without_added_sections(result.stdout, fmt) == (FIXTURES / "reports_d110afe" / REPORTS[fmt]).read_text()
    if fmt in ADDED_SINCE:
        assert "Inference images/s" in result.stdout  # the efficiency table is there


def test_the_report_with_published_rows_is_the_earlier_one(earlier):
    _, results = earlier
    result = CliRunner().invoke(app, ["report", "--suite", "vtab", "--results", str(results), "--reference", "paper"])
    assert result.stdout == (FIXTURES / "reports_d110afe" / "report.reference.md").read_text()
