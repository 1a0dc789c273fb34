"""Suites as data: the TOML files in `peftbench.tasks` (the top-level `tasks/` folder)."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from .errors import PeftbenchError


@dataclass(frozen=True)
class Task:
    """One classification task of a suite, as its TOML entry describes it."""

    name: str
    group: str
    num_classes: int
    splits: dict[str, int]
    aliases: tuple[str, ...] = ()
    image_dir: str = ""
    source: str = ""
    # the noah-lists layout: split -> list file, and split -> image folder where it differs from image_dir
    # (paths relative to the suite's data folder; peftbench/data/noah_lists.py)
    lists: dict[str, str] = field(default_factory=dict)
    image_dirs: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Suite:
    """A named list of tasks sharing one on-disk layout and training defaults."""

    name: str
    layout: str
    model: str  # the backbone runs use unless --model says otherwise
    train_split: str  # what the default protocol trains on ...
    eval_split: str  # ... and evaluates once, after the last epoch
    recipe: str  # default preprocessing (peftbench.data.recipes)
    tasks: tuple[Task, ...]
    groups: tuple[str, ...]
    aliases: tuple[str, ...] = ()
    description: str = ""
    generator: str | None = None
    subdir: str = ""
    defaults: dict = field(default_factory=dict)
    tune_splits: tuple[str, str] = ("train800", "val200")  # the tune protocol trains on the first, scores the second
    tune_lr_factors: tuple[float, ...] = ()  # a suite-wide tune grid: each method's lr times these (demo)
    # the input resolution every backbone is built for (VTAB-1k, FGVC: 224, as every paper); None: the backbone's own
    image_size: int | None = None

    def task(self, name: str) -> Task:
        """The task called `name` or one of its aliases."""
        for task in self.tasks:
            if name == task.name or name in task.aliases:
                return task
        valid = ", ".join(t.name for t in self.tasks)
        raise PeftbenchError(f"unknown task '{name}' in suite '{self.name}'; valid tasks: {valid}")

    def select(self, names: list[str] | None) -> list[Task]:
        """The tasks named (all of them when `names` is empty), in suite order, without repeats."""
        if not names:
            return list(self.tasks)
        chosen = {self.task(n).name for n in names}
        return [t for t in self.tasks if t.name in chosen]

    def data_dir(self, data_root: Path) -> Path:
        """Where this suite's task folders live under the data root."""
        return data_root / self.subdir if self.subdir else data_root


def _parse_suite(path: Path) -> Suite:
    raw = tomllib.loads(path.read_text())
    tune = raw["tune"]
    tasks = tuple(
        Task(
            name=t["name"],
            group=t["group"],
            num_classes=int(t["num_classes"]),
            splits={k: int(v) for k, v in t["splits"].items()},
            aliases=tuple(t.get("aliases", ())),
            image_dir=t.get("image_dir", ""),
            source=t.get("source", ""),
            lists=dict(t.get("lists", {})),
            image_dirs=dict(t.get("image_dirs", {})),
        )
        for t in raw["tasks"]
    )
    return Suite(
        name=raw["name"],
        layout=raw["layout"],
        model=raw["model"],
        train_split=raw["train_split"],
        eval_split=raw["eval_split"],
        recipe=raw["recipe"],
        tasks=tasks,
        groups=tuple(raw.get("groups") or dict.fromkeys(t.group for t in tasks)),
        aliases=tuple(raw.get("aliases", ())),
        description=raw.get("description", ""),
        generator=raw.get("generator"),
        subdir=raw.get("subdir", ""),
        defaults=dict(raw.get("defaults", {})),
        tune_splits=(tune["train_split"], tune["eval_split"]),
        tune_lr_factors=tuple(float(f) for f in tune.get("lr_factors", ())),
        image_size=int(raw["image_size"]) if "image_size" in raw else None,
    )


@cache
def all_suites() -> dict[str, Suite]:
    """Every built-in suite by its canonical name."""
    folder = resources.files("peftbench.tasks")
    suites = [_parse_suite(Path(str(f))) for f in folder.iterdir() if f.name.endswith(".toml")]
    return {s.name: s for s in sorted(suites, key=lambda s: s.name)}


def get_suite(name: str) -> Suite:
    """The suite called `name` or one of its aliases."""
    for suite in all_suites().values():
        if name == suite.name or name in suite.aliases:
            return suite
    valid = ", ".join(f"{s.name} ({', '.join(s.aliases)})" if s.aliases else s.name for s in all_suites().values())
    raise PeftbenchError(f"unknown suite '{name}'; valid suites: {valid}")
