"""One entry point for a task's split, whatever the suite's layout, through the decode-once cache
that epochs, methods, seeds and later processes reuse."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import PeftbenchError
from ..suites import Suite, Task
from . import cache, fgvc, hf, noah_lists, tfds, vtab
from .cache import FixedSplit, RaggedSplit
from .images import decode_for_recipe
from .recipes import Recipe

DECODER_VERSION = 1  # bump when decoding changes, so cached entries are rebuilt
DATA_FORMATS = ("auto", "vtab-lists", "tfds", "hf")  # vtab-lists: the suite's own layout (list files, FGVC JSON)
HF_LAYOUTS = ("vtab1k", "fgvc")  # suites whose task folders may hold Hugging Face dataset files (peftbench.data.hf)


def data_format(suite: Suite, data_root: Path, requested: str = "auto") -> str:
    """The layout to read: `tfds`, `hf` or the suite's own (`requested`, or auto-detected: a
    `<dataset>/<version>/dataset_info.json` under the suite's folder means a TFDS tree; a task folder
    holding parquet files or a dataset_dict.json means Hugging Face dataset files)."""
    if requested not in DATA_FORMATS:
        raise PeftbenchError(f"unknown data format '{requested}'; expected one of {', '.join(DATA_FORMATS)}")
    if requested == "tfds" and suite.layout != "vtab1k":
        raise PeftbenchError(f"suite '{suite.name}' has no TFDS definitions; --data-format tfds is for VTAB-1k")
    if requested == "hf" and (suite.layout not in HF_LAYOUTS or suite.generator is not None):
        raise PeftbenchError(f"suite '{suite.name}' has no Hugging Face layout; --data-format hf is for vtab, fgvc")
    if requested == "auto":  # HF files first: a save_to_disk split's dataset_info.json looks like a TFDS version's
        if suite.layout in HF_LAYOUTS and suite.generator is None and _hf_tree(suite, data_root):
            return "hf"
        tree = suite.layout == "vtab1k" and suite.generator is None and tfds.is_tfds_tree(suite.data_dir(data_root))
        return "tfds" if tree else suite.layout
    return suite.layout if requested == "vtab-lists" else requested


def _hf_tree(suite: Suite, data_root: Path) -> bool:
    """Whether a task folder of the suite (the first of its name and aliases that exists) holds HF dataset files."""
    base = suite.data_dir(data_root)
    for task in suite.tasks:
        folder = next((base / n for n in (task.name, *task.aliases) if (base / n).is_dir()), None)
        if folder is not None and hf.is_hf_folder(folder):
            return True
    return False


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
    """Image paths, labels (0..C-1) and the list/JSON files they come from, for each layout."""
    if suite.layout == "noah-lists":  # list files named per split in the task's TOML entry, no task folder
        images, labels, path = noah_lists.read_split(suite, task, split, data_root)
        return images, labels, [path]
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
    layout = data_format(suite, data_root, requested_format)
    if layout == "tfds":
        return _load_tfds_split(suite, task, split, data_root, image_size, recipe, cache_dir)
    if layout == "hf":
        return _load_hf_split(suite, task, split, data_root, image_size, recipe, cache_dir)
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


def _load_hf_split(
    suite: Suite, task: Task, split: str, data_root: Path, image_size: int, recipe: Recipe, cache_dir: Path | None
) -> FixedSplit | RaggedSplit:
    """A split of Hugging Face dataset files: keyed on its files (names, sizes, sampled sha256), so a cache
    hit lists the task folder and samples the files, never opens them with the datasets library."""
    folder = hf.find_task(task_dir(suite, task, data_root), suite.layout)
    digest = hf.digest(folder, split, cache.sampled_sha256)
    key = {
        "hf": digest,
        "recipe": {
            "split": split,
            "folder": str(folder.folder.resolve()),
            "input_size": image_size,
            "decoder": DECODER_VERSION,
            **recipe.decoding(),
        },
    }
    hf_cache = Path(cache_dir or cache.default_cache_dir()) / "hf"

    def build() -> tuple:
        images, labels = hf.read_split(folder, split, task.num_classes, hf_cache)
        return decode_for_recipe(images, recipe, image_size), np.asarray(labels, dtype=np.int64)

    def source() -> dict:
        return {
            "layout": "hf",
            "format": folder.kind,
            "split": split,
            "sha256": cache.canonical_sha256({"files": digest, "split": split}),
            "files": digest,
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
        hints = {"fgvc": fgvc.LAYOUT_HINT, "noah-lists": noah_lists.LAYOUT_HINT}
        hint = hints.get(suite.layout, vtab.LAYOUT_HINT)
        raise PeftbenchError(
            f"data root {data_root} does not exist; pass --data-root or set PEFTBENCH_DATA "
            f"(expected the {suite.layout} layout: {hint})"
        )
