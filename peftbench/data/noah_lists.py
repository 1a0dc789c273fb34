"""NOAH's list files for its few-shot FGVC and domain-generalisation suites (ZhangYuanhan-AI/NOAH@e9c55f3, `data/`).

The tree is NOAH's `data/` folder with the images added (as CoOp's DATASETS.md lays them out):

    <data-root>/few-shot/<dataset>/annotations/train_meta.list.num_shot_<k>.seed_<s>   k in 1 2 4 8 16, s in 0 1 2
    <data-root>/few-shot/<dataset>/annotations/{val_meta.list,test_meta.list}
    <data-root>/few-shot/imagenet/annotations/{val_meta.list,unofficial_val_list_4_shot16seed0}
    <data-root>/domain-generalization/<target>/annotations/val_meta.list

Each line is `<image path> <integer label>`, split at the last space as lib/datasets.py's
`general_dataset_few_shot` does (`line.rsplit(' ', 1)`), so a path may hold spaces (ImageNet-A's do).
Which list a split reads and which folder its paths are relative to is data: the task's `lists` and
`image_dirs` / `image_dir` in tasks/*.toml, mirroring that class's path rules (`<dataset>/images/`,
Stanford Cars' folder itself, ImageNet's `train/` and `val/`, a target's own folder).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import PeftbenchError
from ..suites import Suite, Task
from .vtab import escapes, text_lines

LINE = "'<image path> <integer label>'"
LAYOUT_HINT = (
    "<data-root>/few-shot/<dataset>/annotations/{train_meta.list.num_shot_<k>.seed_<s>,val_meta.list,test_meta.list} "
    f"and <data-root>/domain-generalization/<target>/annotations/val_meta.list, lines {LINE} (NOAH's data/ folder)"
)


def split_files(suite: Suite, task: Task, split: str, data_root: Path) -> tuple[Path, Path]:
    """The list file of `split` and the folder its image paths are relative to."""
    if split not in task.lists:
        valid = ", ".join(task.lists)
        raise PeftbenchError(
            f"task '{task.name}' has no split '{split}' in the noah-lists layout; valid splits: {valid}"
        )
    base = suite.data_dir(data_root)
    return base / task.lists[split], base / task.image_dirs.get(split, task.image_dir)


def read_list(path: Path, image_root: Path, num_classes: int) -> tuple[list[Path], list[int]]:
    """Image paths (under `image_root`) and labels of one list file, each line checked; blank lines skipped."""
    if not path.is_file():
        raise PeftbenchError(f"missing list file {path}; expected the noah-lists layout {LAYOUT_HINT}")
    images: list[Path] = []
    labels: list[int] = []
    for number, line in enumerate(text_lines(path), start=1):
        if not line.strip():
            continue
        parts = line.rstrip().rsplit(" ", 1)
        if len(parts) != 2 or not parts[0].strip() or not parts[1].isdigit():
            raise PeftbenchError(f"{path}:{number}: expected {LINE}, got {line.strip()!r}")
        label = int(parts[1])
        if label >= num_classes:
            raise PeftbenchError(f"{path}:{number}: label {label} outside 0..{num_classes - 1} for this task")
        if escapes(parts[0]):
            raise PeftbenchError(
                f"{path}:{number}: image path {parts[0]!r} leaves the image folder {image_root}; "
                "expected a path relative to it"
            )
        images.append(image_root / parts[0])
        labels.append(label)
    if not images:
        raise PeftbenchError(f"{path}: list file is empty")
    return images, labels


def read_split(suite: Suite, task: Task, split: str, data_root: Path) -> tuple[list[Path], list[int], Path]:
    """Image paths, labels and the list file of `split`."""
    path, image_root = split_files(suite, task, split, data_root)
    images, labels = read_list(path, image_root, task.num_classes)
    return images, labels, path
