"""Published training settings (`--protocol paper`), read from `tasks/paper/settings.toml`.

Only methods whose papers fix their settings per task have them; any other method under
`paper` is refused with a pointer to `--protocol tune`.
"""

from __future__ import annotations

import csv
import io
import sys
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from ..errors import PeftbenchError
from ..suites import Suite, Task

NOT_SETTINGS = {"suite", "task", "source", "hflip", "recipe", "recipe_hflip", "tasks", "processes", "model_ema_decay"}


@dataclass(frozen=True)
class PaperSettings:
    settings: dict[str, Any]  # engine settings and method options, as published
    recipe: str
    source: str


def _folder():
    return resources.files("peftbench.tasks").joinpath("paper")


@cache
def _table() -> dict[str, Any]:
    return tomllib.loads(_folder().joinpath("settings.toml").read_text())


@cache
def _rows(filename: str) -> dict[tuple[str, str], dict[str, str]]:
    text = _folder().joinpath(filename).read_text()
    lines = [line for line in io.StringIO(text) if not line.startswith("#")]
    return {(row["suite"], row["task"]): row for row in csv.DictReader(lines)}


def methods_with_settings() -> list[str]:
    return sorted(_table())


def published(method: str, suite: Suite, task: Task) -> PaperSettings:
    """The published settings of `method` on `task`, or an error saying why there are none."""
    table = _table()
    if method not in table:
        raise PeftbenchError(
            f"method '{method}' has no fixed published settings (--protocol paper knows "
            f"{', '.join(methods_with_settings())}); choose its settings on val with --protocol tune"
        )
    entry = table[method]
    if suite.name not in entry:
        suites = ", ".join(k for k, v in entry.items() if isinstance(v, dict))
        raise PeftbenchError(
            f"method '{method}' has published settings for {suites}, not for suite '{suite.name}'; "
            "use --protocol default or tune there"
        )
    suite_entry = entry[suite.name]
    if "unsupported" in suite_entry:
        raise PeftbenchError(f"--protocol paper cannot run {method} on {suite.name}: {suite_entry['unsupported']}")
    settings = {k: v for k, v in suite_entry.items() if k not in NOT_SETTINGS}
    recipe = suite_entry["recipe"]
    if "per_task" in entry:
        row = _rows(entry["per_task"]).get((suite.name, task.name))
        if row is None:
            raise PeftbenchError(f"{entry['per_task']} has no row for {suite.name}/{task.name}")
        settings.update({k: v for k, v in row.items() if k not in NOT_SETTINGS and v != ""})
        if row.get("processes"):  # data-parallel scripts: the effective batch is per-process batch x processes
            settings["batch_size"] = int(row["batch_size"]) * int(row["processes"])
        if row.get("hflip") == "yes":
            recipe = suite_entry.get("recipe_hflip", recipe)
    settings.update(suite_entry.get("tasks", {}).get(task.name, {}))
    return PaperSettings(settings, recipe, entry["source"])
