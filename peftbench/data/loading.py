"""One entry point for a task's split, whatever the suite's layout, through the decode-once cache
that epochs, methods, seeds and later processes reuse."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import PeftbenchError
from ..suites import Suite, Task
from . import cache, fgvc, tfds, vtab
from .cache import FixedSplit, RaggedSplit
from .images import decode_for_recipe
from .recipes import Recipe

DECODER_VERSION = 1  # bump when decoding changes, so cached entries are rebuilt
DATA_FORMATS = ("auto", "vtab-lists", "tfds")  # vtab-lists: the suite's own layout (list files, FGVC JSON)


def data_format(suite: Suite, data_root: Path, requested: str = "auto") -> str:
    """The layout to read: `tfds` or the suite's own (`requested`, or auto-detected: a
    `<dataset>/<version>/dataset_info.json` under the suite's folder means a TFDS tree)."""
    if requested not in DATA_FORMATS:
        raise PeftbenchError(f"unknown data format '{requested}'; expected one of {', '.join(DATA_FORMATS)}")
    if requested == "tfds" and suite.layout != "vtab1k":
        raise PeftbenchError(f"suite '{suite.name}' has no TFDS definitions; --data-format tfds is for VTAB-1k")
    if requested == "auto":
        tree = suite.layout == "vtab1k" and suite.generator is None and tfds.is_tfds_tree(suite.data_dir(data_root))
        return "tfds" if tree else suite.layout
    return suite.layout if requested == "vtab-lists" else requested


@dataclass(frozen=True)
class SplitData:
    """A split held in memory: uint8 images (N, 3, H, W) and int64 labels (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, indices: torch.Tensor) -> torch.Tensor:
        return self.images[indices]


def task_dir(suite: Suite, task: Task, data_root: Path) -> Path:
    """The folder holding a task's files (the first of its name and aliases that exists)."""
    base = suite.data_dir(data_root)
    for name in (task.name, *task.aliases):
        if (base / name).is_dir():
            return base / name
    aliases = f" (or {', '.join(task.aliases)})" if task.aliases else ""
    raise PeftbenchError(
        f"missing task folder {base / task.name}{aliases}; expected the {suite.layout} layout under {base}"
    )


def read_split(suite: Suite, task: Task, split: str, data_root: Path) -> tuple[list[Path], list[int], list[Path]]:
    """Image paths, labels (0..C-1) and the list/JSON files they come from, for either layout."""
    folder = task_dir(suite, task, data_root)
    if suite.layout == "fgvc":
        images, labels = fgvc.read_split(folder, task.image_dir, split, task.num_classes)
        return images, labels, fgvc.json_files(folder)  # labels depend on every split file
    path = vtab.list_file(folder, split)
    images, labels = vtab.read_list(path, task.num_classes)
    return images, labels, [path]


def load_split(
    suite: Suite,
    task: Task,
    split: str,
    data_root: Path,
    image_size: int,
    recipe: Recipe,
    cache_dir: Path | None = None,
    requested_format: str = "auto",
) -> FixedSplit | RaggedSplit:
    """`split` of `task` from the decode-once cache, decoded (and fingerprinted) on first use."""
    if data_format(suite, data_root, requested_format) == "tfds":
        return _load_tfds_split(suite, task, split, data_root, image_size, recipe, cache_dir)
    images, labels, sources = read_split(suite, task, split, data_root)
    key = cache.split_key(
        sources,
        {
            "split": split,
            "folder": str(sources[0].parent.resolve()),
            "input_size": image_size,
            "decoder": DECODER_VERSION,
            **recipe.decoding(),
        },
    )

    def build() -> tuple:
        return decode_for_recipe(images, recipe, image_size), np.asarray(labels, dtype=np.int64)

    return cache.get_or_build(key, build, cache_dir, source=lambda: cache.fingerprint(sources, images))


def _load_tfds_split(
    suite: Suite, task: Task, split: str, data_root: Path, image_size: int, recipe: Recipe, cache_dir: Path | None
) -> FixedSplit | RaggedSplit:
    """A split of a TFDS tree: keyed on its shards (names, sizes, sampled sha256) and the task's definition,
    so a cache hit reads dataset_info.json and samples the shards, never parses a record."""
    definition = tfds.suite_tasks(suite.name)[task.name]
    dataset = tfds.task_dataset(definition, suite.data_dir(data_root))
    pieces = tfds.resolve(definition.splits[split], dataset, definition.counts)
    shards = [path for name in dict.fromkeys(p.split for p in pieces) for path in dataset.split(name).shards]
    digest = tfds.sampled_digest(shards, cache.sampled_sha256)
    key = {
        "tfds": digest,
        "recipe": {
            "split": split,
            "definition": definition.definition(),
            "folder": str(dataset.folder.resolve()),
            "input_size": image_size,
            "decoder": DECODER_VERSION,
            **recipe.decoding(),
        },
    }

    def build() -> tuple:
        read = tfds.read_task_split(definition, suite.data_dir(data_root), split)
        return decode_for_recipe(read.images, recipe, image_size), np.asarray(read.labels, dtype=np.int64)

    def source() -> dict:
        summary = cache.canonical_sha256({"shards": digest, "definition": definition.definition(), "split": split})
        return {
            "layout": "tfds",
            "dataset": f"{definition.dataset}/{dataset.version}",
            "split": definition.splits[split],
            "sha256": summary,
            "shards": digest,
            "bytes": sum(d["bytes"] for d in digest),
        }

    return cache.get_or_build(key, build, cache_dir, source=source)


def prepare_suite_data(suite: Suite, tasks: list[Task], data_root: Path) -> None:
    """Generate missing demo tasks; check that a real suite's data root exists."""
    if suite.generator == "demo":
        from .demo import is_current, write_demo_task

        for task in tasks:
            folder = suite.data_dir(data_root) / task.name
            if not is_current(folder):
                write_demo_task(folder, task.name, task.splits)
        return
    if not data_root.is_dir():
        hint = fgvc.LAYOUT_HINT if suite.layout == "fgvc" else vtab.LAYOUT_HINT
        raise PeftbenchError(
            f"data root {data_root} does not exist; pass --data-root or set PEFTBENCH_DATA "
            f"(expected the {suite.layout} layout: {hint})"
        )
