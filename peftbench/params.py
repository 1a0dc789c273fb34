"""Exact trainable-parameter counts per method and task, without data or weights.

Each method is applied once to the backbone built on the `meta` device (no memory, no
initialisation cost); the head adds `num_features * classes + classes` per task.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from torch import nn

from .anatomy import head_paths
from .api import adapt
from .backbone import create_backbone, head_parameter_names
from .errors import PeftbenchError
from .methods import get_method, resolve_method_names
from .settings import check_keys, parse_assignments, resolve
from .suites import Suite, get_suite


def count_parameters(model: nn.Module, head_names: set[str]) -> dict[str, int]:
    """Trainable parameters with and without the head, the head's, and the model's total."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    head = sum(p.numel() for n, p in model.named_parameters() if n in head_names)
    total = sum(p.numel() for p in model.parameters())
    return {"trainable": trainable, "trainable_without_head": trainable - head, "head": head, "total": total}


@dataclass(frozen=True)
class MethodCount:
    method: str
    without_head: int
    with_head: dict[str, int]  # task -> trainable parameters, head included
    refused: str = ""  # why the method is not defined on this backbone (then there are no counts)

    @property
    def mean_with_head(self) -> float:
        return sum(self.with_head.values()) / len(self.with_head)


def count_trainable(method_name: str, model_name: str, suite: Suite, overrides: dict[str, Any]) -> MethodCount:
    """Trainable parameters of `method_name` on every task of `suite`; `overrides` may hold options
    of other methods too (vetted by `settings.check_keys`), which this one ignores."""
    cls = get_method(method_name)
    _, options = resolve(cls, {}, overrides)
    try:
        with torch.device("meta"):  # no weights: shapes are all a count needs
            model, _ = create_backbone(model_name, suite.tasks[0].num_classes, None, suite.image_size)
            adapt(model, cls(**options))
    except (RuntimeError, NotImplementedError):  # a method that reads values as it builds (peft's random inits)
        model, _ = create_backbone(model_name, suite.tasks[0].num_classes, None, suite.image_size)
        adapt(model, cls(**options))
    head = head_parameter_names(model)
    without_head = sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and n not in head)
    # DeiT distilled: two heads, each num_features x classes + classes
    per_class = sum(model.get_submodule(path).in_features + 1 for path in head_paths(model))
    return MethodCount(
        method_name, without_head, {t.name: without_head + per_class * t.num_classes for t in suite.tasks}
    )


def count_or_reason(method_name: str, model_name: str, suite: Suite, overrides: dict[str, Any]) -> MethodCount:
    """`count_trainable`, or the one-line reason the method is refused on this backbone."""
    try:
        return count_trainable(method_name, model_name, suite, overrides)
    except PeftbenchError as exc:
        return MethodCount(method_name, 0, {}, refused=str(exc))


def counts_table(counts: list[MethodCount], suite: Suite) -> pd.DataFrame:
    rows = []
    for count in (c for c in counts if not c.refused):
        row: dict[str, Any] = {
            "Method": count.method,
            "Params (M) incl. head, mean": count.mean_with_head / 1e6,
            "Params (M) excl. head": count.without_head / 1e6,
            "excl. head": count.without_head,
        }
        row.update({f"{task} incl. head": n for task, n in count.with_head.items()})
        rows.append(row)
    return pd.DataFrame(rows).set_index("Method")


def render_counts(counts: list[MethodCount], suite: Suite, model_name: str, fmt: str) -> str:
    if fmt == "json":
        payload = {
            "suite": suite.name,
            "model": model_name,
            "methods": {
                c.method: {"without_head": c.without_head, "with_head": c.with_head, "mean_with_head": c.mean_with_head}
                for c in counts
                if not c.refused
            },
            "refused": {c.method: c.refused for c in counts if c.refused},
        }
        return json.dumps(payload, indent=2) + "\n"
    refused = "".join(f"- refused, {c.method}: {c.refused}\n" for c in counts if c.refused)
    if len(refused.splitlines()) == len(counts):
        return f"## Trainable parameters: {suite.name}\n\nNo method is defined on `{model_name}`:\n\n{refused}"
    table = counts_table(counts, suite)
    shown = table.apply(lambda col: col.map(lambda v: f"{v:.2f}" if "(M)" in col.name else f"{int(v):,}"))
    notes = (
        f"Trainable parameters of `{model_name}` on suite {suite.name}: per task with the classification head, "
        f"the mean over the suite's {len(suite.tasks)} tasks with the head (the RLRR paper's convention), and without it."
    )
    return (
        f"## Trainable parameters: {suite.name}\n\n{shown.to_markdown(disable_numparse=True)}\n\n- {notes}\n{refused}"
    )


def suite_counts(suite: str, methods: list[str], model: str | None, assignments: list[str], fmt: str) -> str:
    """`peftbench params`: the counts of `methods` (or `all`) on the suite's tasks, rendered in `fmt`."""
    chosen = get_suite(suite)
    names = resolve_method_names(methods)
    overrides = parse_assignments(assignments)
    check_keys(overrides, [get_method(name) for name in names])
    model_name = model or chosen.model
    counts = [count_or_reason(name, model_name, chosen, overrides) for name in names]
    return render_counts(counts, chosen, model_name, fmt)
