"""`--protocol tune` (VPT's protocol): a grid of settings, trials scored on val, one choice.

Each grid point trains on the suite's tune train split (VTAB-1k: train800) and is scored by its
final-epoch top-1 on the tune eval split (val200); the best point wins, ties going to the smaller
learning rate (then the earlier point). The final runs retrain with it on train800val200.
"""

from __future__ import annotations

import itertools
from typing import Any

from ..errors import PeftbenchError
from ..settings import TRAIN_FIELDS, coerce, field_type
from ..suites import Suite


def parse_grid(items: list[str]) -> dict[str, list[str]]:
    """`["lr=1e-3,5e-3", "weight_decay=0,1e-4"]` -> `{"lr": ["1e-3", "5e-3"], "weight_decay": [...]}`."""
    grid: dict[str, list[str]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip()
        parts = [v.strip() for v in values.split(",")]
        if not sep or not key.isidentifier() or not all(parts):
            raise PeftbenchError(f"malformed --grid '{item}': expected key=value,value,..., e.g. --grid lr=1e-3,5e-3")
        if key in grid:
            raise PeftbenchError(f"--grid names '{key}' twice; give its values in one --grid {key}=a,b")
        grid[key] = parts
    return grid


def method_grid(
    method_cls: type, suite: Suite, settings: dict[str, Any], requested: dict[str, list[str]]
) -> dict[str, list]:
    """The grid one method is tuned over: `--grid` values, else the suite's lr factors around the
    method's resolved lr, else the method's own default grid. Values are typed."""
    if requested:
        fields = {**TRAIN_FIELDS, **method_cls.option_fields()}
        return {k: [coerce(k, v, field_type(fields[k])) for v in values] for k, values in requested.items()}
    if suite.tune_lr_factors:
        return {"lr": [settings["lr"] * factor for factor in suite.tune_lr_factors]}
    return {k: list(v) for k, v in method_cls.tune_grid.items()}


def grid_points(grid: dict[str, list]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, in the order given."""
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def trial_values(settings: dict[str, Any], point: dict[str, Any], per_256: bool) -> dict[str, Any]:
    """The values a grid point sets; with `per_256` (VPT) the point's lr is per 256 images."""
    if per_256 and "lr" in point:
        return {**point, "lr": point["lr"] * settings["batch_size"] / 256}
    return dict(point)


def choose(trials: list[dict[str, Any]]) -> dict[str, Any]:
    """The winning trial: highest val top-1 among finished ones, ties to the smaller lr, then grid order.

    Each trial is `{"point": {...}, "settings": {...}, "status": "ok"|"failed", "val_top1": float}`.
    """
    finished = [(i, t) for i, t in enumerate(trials) if t["status"] == "ok"]
    if not finished:
        reasons = "; ".join(sorted({t.get("reason", "?") for t in trials}))[:300]
        raise PeftbenchError(f"every tune trial failed, nothing to choose from ({reasons})")
    _, best = min(finished, key=lambda it: (-it[1]["val_top1"], it[1]["settings"].get("lr", 0.0), it[0]))
    return best
