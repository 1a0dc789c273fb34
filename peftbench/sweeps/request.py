"""RunRequest: what `peftbench run` was asked to do, validated, and its JSON form for workers and manifests."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from ..data.recipes import get_recipe
from ..errors import PeftbenchError
from ..methods import resolve_method_names
from ..settings import parse_assignments
from ..spec import check_protocol
from ..suites import Suite, Task, get_suite
from .protocols import seeds_from
from .tuning import parse_grid


@dataclasses.dataclass(frozen=True)
class RunRequest:
    suite: Suite
    tasks: list[Task]
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
    data_format: str = "auto"  # auto | vtab-lists | tfds | hf (peftbench.data.loading.data_format)

    @classmethod
    def from_options(
        cls,
        methods: list[str],
        suite: str,
        data_root: Path,
        tasks: list[str] | None = None,
        protocol: str = "default",
        grid: list[str] | None = None,
        model: str | None = None,
        weights: Path | None = None,
        no_pretrained: bool = False,
        seed: list[int] | None = None,
        seeds: int | None = None,
        epochs: int | None = None,
        batch_size: int | None = None,
        eval_every: int = 1,
        assignments: list[str] | None = None,
        recipe: str | None = None,
        **how: Any,
    ) -> RunRequest:
        """A request from the command line's values, each checked with a one-line error.

        `how` holds the fields that say how units run, not what they are (device, force, cache_dir,
        retry_failed, compile, data_format)."""
        if weights is not None and no_pretrained:
            raise PeftbenchError("--weights and --no-pretrained exclude each other; give one")
        if grid and protocol != "tune":
            raise PeftbenchError("--grid applies to --protocol tune only")
        if eval_every < 1:
            raise PeftbenchError(f"--eval-every must be at least 1, got {eval_every}")
        chosen = get_suite(suite)
        overrides: dict[str, Any] = parse_assignments(assignments or [])
        overrides.update({k: v for k, v in (("epochs", epochs), ("batch_size", batch_size)) if v is not None})
        return cls(
            suite=chosen,
            tasks=chosen.select(tasks),
            methods=resolve_method_names(methods),
            model=model or chosen.model,
            weights=None if no_pretrained else (str(weights) if weights else "default"),
            seeds=seeds_from(seed, seeds),
            overrides=overrides,
            data_root=data_root,
            recipe=get_recipe(recipe).name if recipe else None,
            protocol=check_protocol(protocol),
            grid=parse_grid(grid or []),
            eval_every=eval_every if protocol == "best-test" else 1,
            **how,
        )

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
    def from_payload(cls, payload: dict[str, Any]) -> RunRequest:
        suite = get_suite(payload["suite"])
        values = {
            **payload,
            "suite": suite,
            "tasks": suite.select(payload["tasks"]),
            "data_root": Path(payload["data_root"]),
            "cache_dir": None if payload["cache_dir"] is None else Path(payload["cache_dir"]),
        }
        return cls(**values)

    def sweep_id(self) -> str:
        """Equal for requests that plan the same units (how to rerun them does not count)."""
        payload = self.payload()
        for name in ("force", "retry_failed", "device", "cache_dir", "data_root", "compile", "data_format"):
            payload.pop(name)
        canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]
