"""Miniature data trees of every VTAB-1k and FGVC task, in the exact on-disk layouts users have.

Real JPEG and PNG files (RGB and greyscale, 8-40 px, varied aspect ratios), a few per split, labels
inside each task's class range. FGVC trees use non-contiguous class ids with one id absent from train,
and trainval.json for some tasks only. Import with `from trees import ...`.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from peftbench.suites import Suite, get_suite

VTAB = get_suite("vtab1k")
FGVC = get_suite("fgvc")

VTAB_SIZES = {"train800": 5, "val200": 4, "test": 6}
FGVC_SIZES = {"train": 6, "val": 4, "test": 5}
FGVC_IDS = (1, 5, 17, 40)  # sorted; train lacks FGVC_IDS[1], so a per-split remapping would differ
FGVC_WITH_TRAINVAL = ("CUB_200_2011", "StanfordDogs")
GREY_PREFIXES = ("dsprites", "smallnorb")  # greyscale in the real data
# the sub-folders of the image paths in VPT's JSON keys, per task
FGVC_KEY_DIRS = {
    "CUB_200_2011": "{cid:03d}.Bird_{cid}",
    "NABirds": "{cid:04d}",
    "OxfordFlowers": "jpg",
    "StanfordDogs": "n0{cid:07d}-Breed_{cid}",
    "StanfordCars": "car_ims",
}


def write_image(path: Path, rng: np.random.Generator, grey: bool = False) -> None:
    """A random image of 8-40 px per side, encoded by its suffix (.jpg or .png)."""
    width, height = (int(n) for n in rng.integers(8, 41, size=2))
    shape = (height, width) if grey else (height, width, 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path)


def spread(count: int, num_classes: int) -> list[int]:
    """`count` labels from 0 to num_classes - 1 inclusive, evenly spaced (both ends included)."""
    return [i * (num_classes - 1) // max(count - 1, 1) for i in range(count)]


def vtab_sizes(sizes: dict[str, int]) -> dict[str, int]:
    """Entries per VTAB-1k list file of a tree written with `sizes` (train800val200 = train800 + val200)."""
    return {**sizes, "train800val200": sizes["train800"] + sizes["val200"]}


def write_vtab_tree(
    root: Path, sizes: dict[str, int] = VTAB_SIZES, folders: dict[str, str] | None = None, seed: int = 0
) -> Path:
    """All 19 VTAB-1k tasks under `root` (folder = task name, or `folders[task]`, e.g. an alias).

    Structured tasks use PNG, the others JPEG; images live in images/<split>/NNNNNN<suffix>.
    """
    rng = np.random.default_rng(seed)
    for task in VTAB.tasks:
        task_dir = root / (folders or {}).get(task.name, task.name)
        suffix = ".png" if task.group == "structured" else ".jpg"
        lines: dict[str, list[str]] = {}
        for split, count in sizes.items():
            lines[split] = []
            for i, label in enumerate(spread(count, task.num_classes)):
                relative = f"images/{split}/{i:06d}{suffix}"
                write_image(task_dir / relative, rng, grey=task.name.startswith(GREY_PREFIXES))
                lines[split].append(f"{relative} {label}")
        lines["train800val200"] = lines["train800"] + lines["val200"]
        for split, entries in lines.items():
            (task_dir / f"{split}.txt").write_text("\n".join(entries) + "\n")
    return root


def write_fgvc_tree(
    root: Path,
    sizes: dict[str, int] = FGVC_SIZES,
    ids: tuple[int, ...] = FGVC_IDS,
    with_trainval: tuple[str, ...] = FGVC_WITH_TRAINVAL,
    seed: int = 0,
) -> Path:
    """All 5 FGVC tasks under `root`: <Task>/<image_dir>/<key> images and the JSON splits.

    Class ids cycle through `ids`, except train, which lacks ids[1]; every third image is a PNG.
    """
    rng = np.random.default_rng(seed)
    for task in FGVC.tasks:
        task_dir = root / task.name
        splits: dict[str, dict[str, int]] = {}
        for split, count in sizes.items():
            pool = [cid for cid in ids if split != "train" or cid != ids[1]]
            splits[split] = {}
            for i in range(count):
                cid = pool[i % len(pool)]
                key = f"{FGVC_KEY_DIRS[task.name].format(cid=cid)}/{split}_{i:04d}{'.png' if i % 3 == 2 else '.jpg'}"
                write_image(task_dir / task.image_dir / key, rng)
                splits[split][key] = cid
        if task.name in with_trainval:
            splits["trainval"] = {**splits["train"], **splits["val"]}
        for split, entries in splits.items():
            (task_dir / f"{split}.json").write_text(json.dumps(entries))
    return root


def fitted_suite(suite: Suite, sizes: dict[str, int], num_classes: int | None = None) -> Suite:
    """`suite` expecting what a miniature tree holds: its split sizes and, when given, its number of classes."""
    splits = vtab_sizes(sizes) if suite.layout == "vtab1k" else dict(sizes)
    tasks = tuple(replace(t, splits=splits, num_classes=num_classes or t.num_classes) for t in suite.tasks)
    return replace(suite, tasks=tasks)
