"""RunSpec: everything that changes a run's result, and its stable key."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One run: a method trained on one task with one seed and fixed settings."""

    suite: str
    task: str
    method: str
    model: str
    weights: str  # sha256 of the weights file, "timm:<id>", or "random init"
    seed: int
    settings: dict[str, Any]  # resolved engine settings and method options
    protocol: str = "default"
    train_split: str = "train800val200"
    eval_split: str = "test"
    recipe: str = "vtab-resize"  # preprocessing (peftbench.data.recipes)

    @property
    def key(self) -> str:
        """A hash of every field: equal specs share a key, any change gives a new one."""
        canonical = json.dumps(dataclasses.asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def label(self) -> str:
        return f"{self.suite}/{self.task} {self.method} seed {self.seed}"
