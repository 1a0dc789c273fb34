"""RunRequest: what `peftbench run` was asked to do, and its JSON form for workers and manifests."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from .suites import Suite, get_suite


@dataclasses.dataclass(frozen=True)
class RunRequest:
    suite: Suite
    tasks: list  # Task
    methods: list[str]
    model: str
    weights: str | Path | None  # "default", a file, or None for random init
    seeds: list[int]
    overrides: dict[str, Any]
    data_root: Path
    device: str = "auto"
    force: bool = False  # rerun finished units too
    cache_dir: Path | None = None  # the decode-once cache; None: $PEFTBENCH_CACHE or the user cache folder
    recipe: str | None = None  # preprocessing; None: the protocol's (the suite's, or the published one)
    protocol: str = "default"
    grid: dict[str, list[str]] | None = None  # --grid for the tune protocol
    eval_every: int = 1  # best-test: evaluate the test split every k epochs
    retry_failed: bool = False  # rerun units whose record says failed
    compile: bool = False  # torch.compile the training forward (how units run, not what they are)

    def payload(self) -> dict[str, Any]:
        """A JSON-able form that `from_payload` turns back into an equal request."""
        out = dataclasses.asdict(self)
        out["suite"] = self.suite.name
        out["tasks"] = [t.name for t in self.tasks]
        for name in ("data_root", "cache_dir"):  # absolute: workers may start elsewhere
            out[name] = None if out[name] is None else str(Path(out[name]).absolute())
        if out["weights"] not in (None, "default"):
            out["weights"] = str(Path(out["weights"]).absolute())
        return out

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> "RunRequest":
        suite = get_suite(payload["suite"])
        values = {**payload, "suite": suite, "tasks": suite.select(payload["tasks"]),
                  "data_root": Path(payload["data_root"]),
                  "cache_dir": None if payload["cache_dir"] is None else Path(payload["cache_dir"])}
        return cls(**values)

    def sweep_id(self) -> str:
        """Equal for requests that plan the same units (how to rerun them does not count)."""
        payload = self.payload()
        for name in ("force", "retry_failed", "device", "cache_dir", "data_root", "compile"):
            payload.pop(name)
        canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]
