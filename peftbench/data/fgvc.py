"""The FGVC layout of VPT's JSON splits: `<root>/<Task>/{train,val,test}.json` (and `trainval.json` in
some releases), each an object mapping an image path, relative to `<root>/<Task>/<image_dir>/`, to an
integer class id.

Class ids need not be contiguous: they are remapped to 0..C-1 through the sorted union of the ids in
all the task's split files, so every split of a task uses the same mapping even when it lacks a class.
Without `trainval.json`, trainval is train followed by val.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import PeftbenchError
from .vtab import escapes

SPLITS = ("train", "val", "trainval", "test")
REQUIRED = ("train", "val", "test")
SHAPE = '{"<image path>": <integer class id>, ...}'
LAYOUT_HINT = f"<data-root>/<Task>/{{train,val,test}}.json (optionally trainval.json), each {SHAPE}"


def split_files(task_dir: Path, split: str) -> list[Path]:
    """The JSON files making up `split`: trainval is trainval.json when present, else train.json + val.json."""
    if split not in SPLITS:
        raise PeftbenchError(f"unknown FGVC split '{split}'; valid splits: {', '.join(SPLITS)}")
    if split == "trainval" and not (task_dir / "trainval.json").is_file():
        return [task_dir / "train.json", task_dir / "val.json"]
    return [task_dir / f"{split}.json"]


def json_files(task_dir: Path) -> list[Path]:
    """Every split file of a task, in SPLITS order: train, val, trainval (only when present), test."""
    return [task_dir / f"{s}.json" for s in SPLITS if s in REQUIRED or (task_dir / f"{s}.json").is_file()]


def read_json(path: Path) -> dict[str, int]:
    """One split file as {relative image path: class id}, in file order, every entry checked."""
    if not path.is_file():
        raise PeftbenchError(f"missing FGVC split file {path}; expected the FGVC layout {LAYOUT_HINT}")
    try:
        data = path.read_bytes()
        entries = json.loads(data[3:] if data.startswith(b"\xef\xbb\xbf") else data)  # a UTF-8 byte-order mark
    except json.JSONDecodeError as exc:
        raise PeftbenchError(f"{path}:{exc.lineno}:{exc.colno}: invalid JSON ({exc.msg}); expected {SHAPE}") from None
    except UnicodeDecodeError as exc:
        raise PeftbenchError(f"{path}: byte {exc.start}: not UTF-8 text; expected JSON {SHAPE}") from None
    if not isinstance(entries, dict):
        raise PeftbenchError(f"{path}: expected a JSON object {SHAPE}, got a JSON {type(entries).__name__}")
    for key, value in entries.items():
        if type(value) is not int:  # bool is an int subclass, but not a class id
            raise PeftbenchError(f"{path}: key {key!r}: expected an integer class id, got {json.dumps(value)}")
        if escapes(key):
            raise PeftbenchError(
                f"{path}: key {key!r}: image path leaves the image folder; expected a path relative to it"
            )
    if not entries:
        raise PeftbenchError(f"{path}: split file has no entries; expected {SHAPE}")
    return entries


def union_ids(splits: list[dict[str, int]]) -> list[int]:
    """The sorted union of the class ids in parsed split files."""
    return sorted({cid for entries in splits for cid in entries.values()})


def class_ids(task_dir: Path) -> list[int]:
    """The sorted union of the class ids in all the task's split files (each of which must be readable).

    Fewer ids than the task's classes is allowed (a class absent from every split), but shifts the
    remapping against the published class order: `data check` warns about it.
    """
    return union_ids([read_json(path) for path in json_files(task_dir)])


def label_index(task_dir: Path, ids: list[int], num_classes: int) -> dict[int, int]:
    """The remapping {class id: label in 0..C-1} of sorted `ids`; more ids than classes is an error."""
    if len(ids) > num_classes:
        raise PeftbenchError(
            f"{task_dir}: the split files hold {len(ids)} distinct class ids ({ids[0]}..{ids[-1]}); "
            f"expected at most the task's {num_classes} classes"
        )
    return {cid: label for label, cid in enumerate(ids)}


def read_split(task_dir: Path, image_dir: str, split: str, num_classes: int) -> tuple[list[Path], list[int]]:
    """Image paths (absolute, under `task_dir/image_dir`) and remapped labels of one split."""
    files = split_files(task_dir, split)
    parsed = {path: read_json(path) for path in json_files(task_dir)}
    index = label_index(task_dir, union_ids(list(parsed.values())), num_classes)
    images: list[Path] = []
    labels: list[int] = []
    for path in files:
        for key, cid in parsed[path].items():
            images.append(task_dir / image_dir / key)
            labels.append(index[cid])
    return images, labels
