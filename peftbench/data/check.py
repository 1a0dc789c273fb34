"""`peftbench data check`: each task folder of a suite against what the suite expects, without training.

Without `deep`, only the list files / JSON splits are read (no image is opened or even stat-ed); with
`deep`, every image they name is opened and fully decoded.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from rich.markup import escape
from rich.table import Table

from ..errors import PeftbenchError
from ..suites import Suite, Task, get_suite
from . import cache, fgvc, hf, noah_lists, tfds, vtab
from .images import decode_image
from .loading import data_format, prepare_suite_data, task_dir

MAX_NAMED_IMAGES = 5  # bad images named per task; the rest are counted
STATUS_STYLE = {"ok": "green", "warn": "yellow", "error": "red"}
SPLIT_RANK = {split: rank for rank, split in enumerate((*vtab.SPLITS, *fgvc.SPLITS))}  # test last


@dataclass
class TaskReport:
    """What `data check` found for one task; `errors` and `warnings` are one-line messages naming a path."""

    task: Task
    folder: Path | None = None  # None: no folder under the task's name or aliases
    sizes: dict[str, int] = field(default_factory=dict)  # entries per split file that could be read
    classes: int = 0  # distinct labels (VTAB-1k) or class ids (FGVC) over the files read
    label_range: tuple[int, int] | None = None  # smallest and largest label / class id read
    images_checked: int | None = None  # distinct images decoded; None without deep
    bad_images: int = 0  # missing or undecodable images (only the first MAX_NAMED_IMAGES are in errors)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        """'error' when anything is unusable, 'warn' when only unexpected, else 'ok'."""
        return "error" if self.errors else "warn" if self.warnings else "ok"


def expected_size(task: Task, split: str) -> int | None:
    """The size the suite gives for `split` (FGVC trainval: train + val); None when it gives none."""
    if split == "trainval" and split not in task.splits and {"train", "val"} <= task.splits.keys():
        return task.splits["train"] + task.splits["val"]
    return task.splits.get(split)


def check_suite(suite: Suite, data_root: Path, deep: bool, requested_format: str = "auto") -> list[TaskReport]:
    """One report per task of `suite` under `data_root`, in suite order."""
    layout = data_format(suite, data_root, requested_format)
    if layout == "tfds":
        return [check_tfds_task(suite, task, data_root, deep) for task in suite.tasks]
    if layout == "hf":
        return [check_hf_task(suite, task, data_root, deep) for task in suite.tasks]
    if suite.layout == "noah-lists":
        return [check_noah_task(suite, task, data_root, deep) for task in suite.tasks]
    if suite.layout not in READERS:
        raise PeftbenchError(f"suite '{suite.name}' uses the '{suite.layout}' layout, which data check cannot read")
    return [check_task(suite, task, data_root, deep) for task in suite.tasks]


def check_tfds_task(suite: Suite, task: Task, data_root: Path, deep: bool) -> TaskReport:
    """A task of a TFDS tree: each split cut as task_adaptation defines it, its labels made and checked.

    Each split must hold the suite's size (test: the full split the definition names, e.g. CIFAR-100's
    10,000); another size is a warning naming the split expression (a partial download, a small tree)."""
    report = TaskReport(task)
    definition = tfds.suite_tasks(suite.name)[task.name]

    def read(split: str) -> SplitRead:
        found = tfds.read_task_split(definition, suite.data_dir(data_root), split)
        report.folder = found.dataset.folder
        return found.images, found.labels, f"{found.dataset.folder}: {split} ({definition.splits[split]})", True

    return _check_splits(report, vtab.SPLITS, read, deep)


def check_hf_task(suite: Suite, task: Task, data_root: Path, deep: bool) -> TaskReport:
    """A task folder of Hugging Face dataset files: each split's labels read (only the label column unless
    `deep`) and checked against 0..C-1, its size compared; with `deep` every image decoded.

    Splits: VTAB-1k's four (train800val200 the union of train800 and val200 when absent); FGVC's train,
    val and test, and trainval when the folder has it."""
    report = TaskReport(task)
    try:
        report.folder = task_dir(suite, task, data_root)
        layout = hf.find_task(report.folder, suite.layout)
    except PeftbenchError as exc:
        report.errors.append(str(exc))
        return report
    splits = [
        s for s in (vtab.SPLITS if suite.layout == "vtab1k" else fgvc.SPLITS) if s != "trainval" or s in layout.splits
    ]

    def read(split: str) -> SplitRead:
        images, labels = hf.read_split(layout, split, task.num_classes, cache.default_cache_dir() / "hf", images=deep)
        where = ", ".join(str(p.relative_to(layout.folder)) for p in layout.sources(split))
        own = split not in hf.UNIONS or split in layout.splits  # a union's rows are its parts' rows
        return images, labels, f"{layout.folder}: {split} ({where})", own

    return _check_splits(report, splits, read, deep)


def check_task(suite: Suite, task: Task, data_root: Path, deep: bool) -> TaskReport:
    """Find the task's folder, read its split files, compare sizes, and with `deep` decode every image."""
    report = TaskReport(task)
    try:
        report.folder = task_dir(suite, task, data_root)
    except PeftbenchError as exc:
        report.errors.append(str(exc))
        return report
    files = READERS[suite.layout](task, report.folder, report)
    for file, images in files.items():
        report.sizes[file.stem] = len(images)
        expected = expected_size(task, file.stem)
        if expected is not None and expected != len(images):
            report.warnings.append(f"{file}: {len(images)} entries, expected {expected} for {task.name}")
    if deep:
        _decode_all([image for images in files.values() for image in images], report)
    return report


def check_noah_task(suite: Suite, task: Task, data_root: Path, deep: bool) -> TaskReport:
    """A task of NOAH's list files: each split's list read and its size compared; the folder shown is the
    one holding the evaluated split's `annotations/` (the DG targets train on ImageNet's lists)."""
    report = TaskReport(task)
    if suite.eval_split in task.lists:
        report.folder = noah_lists.split_files(suite, task, suite.eval_split, data_root)[0].parent.parent

    def read(split: str) -> SplitRead:
        images, labels, path = noah_lists.read_split(suite, task, split, data_root)
        return images, labels, f"{path}: {split}", True

    return _check_splits(report, list(task.lists), read, deep)


SplitRead = tuple[list, list[int], str, bool]  # images, labels, where (for a warning), its images decoded with --deep


def _check_splits(report: TaskReport, splits, read: Callable[[str], SplitRead], deep: bool) -> TaskReport:
    """Each split read (an unreadable one is an error), its size compared with the suite's (a warning
    naming where it lives), the labels' classes recorded, and with `deep` every image decoded."""
    images: list = []
    labels: list[int] = []
    for split in splits:
        try:
            split_images, split_labels, where, own = read(split)
        except PeftbenchError as exc:
            report.errors.append(str(exc))
            continue
        report.sizes[split] = len(split_labels)
        expected = expected_size(report.task, split)
        if expected is not None and expected != len(split_labels):
            report.warnings.append(
                f"{where} holds {len(split_labels)} examples, expected {expected} for {report.task.name}"
            )
        if own:
            images.extend(split_images)
        labels.extend(split_labels)
    _record_classes(report, labels)
    if deep:
        _decode_all(images, report)
    return report


def _read_vtab(task: Task, folder: Path, report: TaskReport) -> dict[Path, list[Path]]:
    """Images per list file that reads cleanly; each unreadable or missing file is an error."""
    files: dict[Path, list[Path]] = {}
    labels: list[int] = []
    for split in vtab.SPLITS:
        try:
            path = vtab.list_file(folder, split)
            files[path], split_labels = vtab.read_list(path, task.num_classes)
        except PeftbenchError as exc:
            report.errors.append(str(exc))
            continue
        labels.extend(split_labels)
    _record_classes(report, labels)
    return files


def _read_fgvc(task: Task, folder: Path, report: TaskReport) -> dict[Path, list[Path]]:
    """Images per JSON split that reads cleanly; also checks the union of class ids against the task."""
    parsed: dict[Path, dict[str, int]] = {}
    for path in fgvc.json_files(folder):
        try:
            parsed[path] = fgvc.read_json(path)
        except PeftbenchError as exc:
            report.errors.append(str(exc))
    ids = fgvc.union_ids(list(parsed.values()))
    _record_classes(report, ids)
    try:
        fgvc.label_index(folder, ids, task.num_classes)
    except PeftbenchError as exc:
        report.errors.append(str(exc))
    if not report.errors and len(ids) < task.num_classes:
        report.warnings.append(
            f"{folder}: the split files hold {len(ids)} distinct class ids, fewer than the task's {task.num_classes} "
            "classes; labels are remapped through the ids present, so they may not match the usual class order"
        )
    return {path: [folder / task.image_dir / key for key in entries] for path, entries in parsed.items()}


READERS = {"vtab1k": _read_vtab, "fgvc": _read_fgvc}


def _record_classes(report: TaskReport, labels: list[int]) -> None:
    report.classes = len(set(labels))
    report.label_range = (min(labels), max(labels)) if labels else None


def _image_problem(path: Path) -> str | None:
    """Why `path` cannot be used as an image (missing, unreadable, corrupt), or None once fully decoded."""
    try:
        decode_image(path, None)  # the loader's own decoding: size limit, modes, corrupt data
    except PeftbenchError as exc:
        return str(exc)
    except Exception as exc:  # PIL raises many types for corrupt data; each one means "cannot decode"
        return f"cannot decode image {path}: {exc}"
    return None


def _decode_all(images: list[Path], report: TaskReport) -> None:
    """Decode each distinct image once (splits share images); name the first few bad ones, count all."""
    unique = list(dict.fromkeys(images))
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:  # PIL decodes without the GIL
        problems = [p for p in pool.map(_image_problem, unique, chunksize=64) if p is not None]
    report.images_checked = len(unique)
    report.bad_images = len(problems)
    report.errors.extend(problems[:MAX_NAMED_IMAGES])
    if len(problems) > MAX_NAMED_IMAGES:
        more = len(problems) - MAX_NAMED_IMAGES
        report.errors.append(f"{report.folder}: {more} more missing or undecodable image(s) beyond those named")


def render_table(reports: list[TaskReport]) -> Table:
    """One row per task: folder, entries/expected per split, classes seen, images decoded, status."""
    splits = sorted(
        {s for r in reports for s in (*r.sizes, *r.task.splits)}, key=lambda s: SPLIT_RANK.get(s, len(SPLIT_RANK))
    )
    deep = any(r.images_checked is not None for r in reports)
    table = Table("task", "folder", *splits, "classes", *(["bad images"] if deep else []), "status")
    for r in reports:
        cells = [_size_cell(r, split) for split in splits]
        classes = f"{r.classes}/{r.task.num_classes}" + (" ({}..{})".format(*r.label_range) if r.label_range else "")
        bad = [f"{r.bad_images}/{r.images_checked}" if r.images_checked is not None else "-"] if deep else []
        status = f"[{STATUS_STYLE[r.status]}]{r.status}[/]"
        folder = escape(r.folder.name) if r.folder else "[red]missing[/]"
        table.add_row(r.task.name, folder, *cells, classes, *bad, status)
    return table


def _size_cell(report: TaskReport, split: str) -> str:
    """'found/expected' (yellow when they differ), '-/expected' for a file not read, '-' for one not expected."""
    found = report.sizes.get(split)
    expected = expected_size(report.task, split)
    if found is None:
        return f"-/{expected}" if split in report.task.splits else "-"
    if expected is None:
        return str(found)
    return f"{found}/{expected}" if found == expected else f"[yellow]{found}/{expected}[/]"


def check_suite_data(
    suite: str, data_root: Path, deep: bool = False, requested_format: str = "auto"
) -> tuple[Suite, list[TaskReport]]:
    """`peftbench data check`: the suite (its demo tasks generated when missing) and one report per task."""
    chosen = get_suite(suite)
    prepare_suite_data(chosen, list(chosen.tasks), data_root)
    return chosen, check_suite(chosen, data_root, deep, requested_format)
