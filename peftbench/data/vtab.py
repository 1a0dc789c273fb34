"""The VTAB-1k list-file layout: `<root>/<task>/{train800,val200,train800val200,test}.txt`.

Each line is `<image path relative to the task folder> <integer label>`, whitespace separated
(e.g. `images/train800/000000.jpg 307`).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import PeftbenchError

SPLITS = ("train800", "val200", "train800val200", "test")
LAYOUT_HINT = "<data-root>/<task>/{train800,val200,train800val200,test}.txt with lines '<image path> <label>'"


def list_file(task_dir: Path, split: str) -> Path:
    """The list file of `split` in a task folder, which must exist."""
    path = task_dir / f"{split}.txt"
    if not path.is_file():
        raise PeftbenchError(f"missing list file {path}; expected the VTAB-1k layout {LAYOUT_HINT}")
    return path


def escapes(relative: str) -> bool:
    """Whether an image path leaves the folder it is relative to (absolute, or `..` past its start).

    Judged on the text alone: no file is touched, and symlinked image folders stay allowed.
    """
    normal = os.path.normpath(relative)
    return os.path.isabs(normal) or normal == os.pardir or normal.startswith(os.pardir + os.sep)


def text_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 text file (a leading byte-order mark allowed); a bad byte is reported as file:line."""
    lines = []
    for number, raw in enumerate(path.read_bytes().splitlines(), start=1):
        try:
            lines.append(raw.decode("utf-8-sig" if number == 1 else "utf-8"))
        except UnicodeDecodeError as exc:
            raise PeftbenchError(
                f"{path}:{number}: byte 0x{raw[exc.start]:02x} at column {exc.start + 1} is not UTF-8; "
                "expected UTF-8 text"
            ) from None
    return lines


def read_list(path: Path, num_classes: int) -> tuple[list[Path], list[int]]:
    """Image paths (absolute) and labels of one list file, each line checked."""
    images: list[Path] = []
    labels: list[int] = []
    for number, line in enumerate(text_lines(path), start=1):
        if not line.strip():
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise PeftbenchError(f"{path}:{number}: expected '<image path> <integer label>', got {line.strip()!r}")
        label = int(parts[1])
        if not 0 <= label < num_classes:
            raise PeftbenchError(f"{path}:{number}: label {label} outside 0..{num_classes - 1} for this task")
        if escapes(parts[0].strip()):
            raise PeftbenchError(
                f"{path}:{number}: image path {parts[0].strip()!r} leaves the task folder {path.parent}; expected a path relative to it"
            )
        images.append(path.parent / parts[0].strip())
        labels.append(label)
    if not images:
        raise PeftbenchError(f"{path}: list file is empty")
    return images, labels
