"""The TensorFlow Datasets (TFDS) layout of VTAB-1k, read without TensorFlow.

A prepared TFDS dataset lives in `<root>/<dataset>[/<config>]/<version>/` (TFDS's `data_dir` layout,
https://www.tensorflow.org/datasets/overview and tensorflow_datasets/core/dataset_info.py): `dataset_info.json`
(the JSON form of `DatasetInfo` in tensorflow_datasets/core/proto/dataset_info.proto: `name`, `version` and
`splits`, each with `name`, `shardLengths` (int64s, written as strings) and `numBytes`), `features.json`, and
the shards `<name>-<split>.tfrecord-<i:05d>-of-<n:05d>` (newer TFDS may name another `filepathTemplate`).

A split's examples are indexed in shard order, which is what TFDS's slicing counts (`train[:800]` is the first
800 examples of shard 0, 1, ...). TFDS's tf.data reader may interleave shards while iterating; that changes the
order it yields them in, never which examples a slice holds. We yield them in index order.

VTAB-1k's split definitions per task (tasks/tfds/vtab1k.toml) use the expression syntax of `resolve`, a subset
of TFDS's split strings (https://www.tensorflow.org/datasets/splits) plus named counts for task_adaptation's
own `(percent * n) // 100` boundaries.
"""

from __future__ import annotations

import functools
import json
import re
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterator

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from ..errors import PeftbenchError
from . import tfrecord
from .images import EncodedImage
from .tfds_labels import LabelError, label_rule

INFO = "dataset_info.json"
DEFAULT_TEMPLATE = "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"
LAYOUT_HINT = (
    "<data-root>/<dataset>[/<config>]/<version>/{dataset_info.json, <dataset>-<split>.tfrecord-NNNNN-of-NNNNN}"
)
_VERSION = re.compile(r"^\d+\.\d+\.\d+$")
_PIECE = re.compile(r"^\s*(?P<split>[A-Za-z_][\w-]*)\s*(?:\[(?P<start>[^:\]]*):(?P<stop>[^\]]*)\])?\s*$")
_TERM = re.compile(r"^\s*(?:(?P<int>\d+)(?P<pct>%)?|(?P<name>[A-Za-z_]\w*))\s*$")


# ---- the suite's definitions --------------------------------------------------------------------------


@dataclass(frozen=True)
class TfdsTask:
    """One VTAB-1k task as a TFDS dataset: where it lives, how its splits are cut, how its label is made."""

    name: str
    num_classes: int
    dataset: str  # TFDS name with config, e.g. "sun397/tfds"
    version: str  # pattern task_adaptation asks for: "3.*.*" or an exact "3.1.0"
    splits: dict[str, str]  # peftbench split -> TFDS split expression
    label: dict[str, Any]  # {"rule": name, **parameters}
    counts: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> {split, percents}
    image: str = "image"
    pixel_scale: int = 1

    def definition(self) -> dict[str, Any]:
        """What decides a split's content besides the files (part of the cache key and the records)."""
        return {
            "dataset": self.dataset,
            "splits": self.splits,
            "counts": self.counts,
            "label": self.label,
            "image": self.image,
            "pixel_scale": self.pixel_scale,
        }


@functools.cache
def suite_tasks(suite: str = "vtab1k") -> dict[str, TfdsTask]:
    """The TFDS definitions of a suite's tasks (tasks/tfds/<suite>.toml), by peftbench task name."""
    path = resources.files("peftbench.tasks") / "tfds" / f"{suite}.toml"
    if not path.is_file():
        raise PeftbenchError(f"suite '{suite}' has no TFDS definitions (expected {path})")
    raw = tomllib.loads(path.read_text())
    return {
        t["name"]: TfdsTask(
            name=t["name"],
            num_classes=int(t["num_classes"]),
            dataset=t["dataset"],
            version=t["version"],
            splits=dict(t["splits"]),
            label=dict(t["label"]),
            counts={k: dict(v) for k, v in t.get("counts", {}).items()},
            image=t.get("image", "image"),
            pixel_scale=int(t.get("pixel_scale", 1)),
        )
        for t in raw["tasks"]
    }


# ---- the on-disk layout -------------------------------------------------------------------------------


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in name.split("."))


def _matches(version: str, pattern: str) -> bool:
    return all(p in ("*", v) for v, p in zip(version.split("."), pattern.split(".")))


def version_dir(root: Path, dataset: str, pattern: str) -> Path:
    """`<root>/<dataset>/<version>/` of the newest version folder matching `pattern` ("3.*.*" or "3.1.0")."""
    base = Path(root) / dataset
    if not base.is_dir():
        raise PeftbenchError(f"missing TFDS dataset folder {base}; expected the TFDS layout {LAYOUT_HINT}")
    versions = sorted((p.name for p in base.iterdir() if p.is_dir() and _VERSION.match(p.name)), key=_version_key)
    chosen = [v for v in versions if _matches(v, pattern)]
    if not chosen:
        found = ", ".join(versions) or "none"
        raise PeftbenchError(
            f"{base}: no version folder matching {pattern} (found: {found}); prepare that TFDS version"
        )
    return base / chosen[-1]


def is_tfds_tree(root: Path) -> bool:
    """Whether `root` holds any `<dataset>[/<config>]/<version>/dataset_info.json` (auto-detection)."""
    root = Path(root)
    return any(root.glob(f"*/*/{INFO}")) or any(root.glob(f"*/*/*/{INFO}"))


@dataclass(frozen=True)
class SplitFiles:
    """One TFDS split on disk: its shards, in order, and how many examples each holds."""

    name: str
    shards: tuple[Path, ...]
    lengths: tuple[int, ...]

    def __len__(self) -> int:
        return sum(self.lengths)


@dataclass(frozen=True)
class Dataset:
    """A prepared TFDS dataset folder: its name, version and splits."""

    folder: Path
    name: str
    version: str
    splits: dict[str, SplitFiles]

    def split(self, name: str) -> SplitFiles:
        if name not in self.splits:
            raise PeftbenchError(
                f"{self.folder / INFO}: no split '{name}' (splits: {', '.join(self.splits) or 'none'}); "
                "expected the splits task_adaptation reads"
            )
        return self.splits[name]


def _shard_names(template: str, name: str, split: str, count: int, file_format: str) -> list[str]:
    return [
        template.replace("{DATASET}", name)
        .replace("{SPLIT}", split)
        .replace("{FILEFORMAT}", file_format)
        .replace("{SHARD_X_OF_Y}", f"{i:05d}-of-{count:05d}")
        .replace("{SHARD_INDEX}", f"{i:05d}")
        .replace("{NUM_SHARDS}", f"{count:05d}")
        for i in range(count)
    ]


@functools.lru_cache(maxsize=64)
def _read_dataset(folder: Path, info_mtime: float) -> Dataset:
    info_path = folder / INFO
    try:
        info = json.loads(info_path.read_text())
        name, file_format = info["name"], info.get("fileFormat", "tfrecord")
        entries = info["splits"]
    except (OSError, ValueError) as exc:
        raise PeftbenchError(f"cannot read {info_path}: {exc}; expected TFDS's dataset_info.json") from None
    except (KeyError, TypeError):
        raise PeftbenchError(f"{info_path}: no 'name' and 'splits'; expected TFDS's dataset_info.json") from None
    if file_format != "tfrecord":
        raise PeftbenchError(f"{info_path}: file format '{file_format}'; only tfrecord shards can be read")
    splits: dict[str, SplitFiles] = {}
    for entry in entries:
        try:
            split = entry["name"]
            lengths = [int(n) for n in entry.get("shardLengths", [])]
        except (KeyError, TypeError, ValueError):
            raise PeftbenchError(
                f"{info_path}: malformed split entry {entry!r}; expected name and shardLengths"
            ) from None
        template = entry.get("filepathTemplate") or DEFAULT_TEMPLATE
        if lengths:
            shards = [folder / n for n in _shard_names(template, name, split, len(lengths), file_format)]
        else:  # older TFDS wrote no shard lengths: count the records of the shards present
            shards = sorted(folder.glob(f"{name}-{split}.{file_format}-?????-of-?????"))
            lengths = [tfrecord.count_records(path) for path in shards]
        for path in shards:
            if not path.is_file():
                raise PeftbenchError(f"missing shard {path}, listed by {info_path}")
        splits[split] = SplitFiles(split, tuple(shards), tuple(lengths))
    return Dataset(folder, name, str(info.get("version", folder.name)), splits)


def read_dataset(folder: Path) -> Dataset:
    """The dataset in a version folder, from its dataset_info.json (reread when that file changes)."""
    folder = Path(folder)
    try:
        mtime = (folder / INFO).stat().st_mtime
    except FileNotFoundError:
        raise PeftbenchError(f"missing {folder / INFO}; expected the TFDS layout {LAYOUT_HINT}") from None
    return _read_dataset(folder, mtime)


# ---- split expressions --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Piece:
    """Examples [start, stop) of one TFDS split, in index order."""

    split: str
    start: int
    stop: int


def count_value(count: dict[str, Any], dataset: Dataset) -> int:
    """task_adaptation's boundary: sum over `percents` of (percent * n) // 100, n = the size of `split`."""
    n = len(dataset.split(count["split"]))
    return sum(int(p) * n // 100 for p in count["percents"])


def _bound(text: str, n: int, counts: dict[str, int], expression: str) -> int:
    total = 0
    for term in text.split("+"):
        match = _TERM.match(term)
        if not match:
            raise ValueError(f"bad boundary {text!r} in split expression {expression!r}")
        if match["name"]:
            if match["name"] not in counts:
                raise ValueError(f"unknown count {match['name']!r} in split expression {expression!r}")
            total += counts[match["name"]]
        elif match["pct"]:
            total += int(round(int(match["int"]) * n / 100))  # TFDS's "closest" rounding
        else:
            total += int(match["int"])
    return total


def resolve(expression: str, dataset: Dataset, counts: dict[str, dict[str, Any]] | None = None) -> list[Piece]:
    """The pieces of a split expression, e.g. "train[:800]+train[train_count:train_count+200]".

    `a+b` concatenates; `split[start:stop]` slices, each boundary a sum of ints, names of `counts` or
    `P%` (P percent of the split's size, rounded to the closest integer as TFDS does). Like TFDS, a
    boundary past the split's size is an error (a tree too small for the definition), not a silent clip.
    """
    values = {name: count_value(count, dataset) for name, count in (counts or {}).items()}
    pieces = []
    for text in re.split(r"\+(?![^\[]*\])", expression):
        match = _PIECE.match(text)
        if not match:
            raise PeftbenchError(f"bad split expression {expression!r}: cannot read {text!r}")
        split = dataset.split(match["split"])
        n = len(split)
        try:
            start = _bound(match["start"], n, values, expression) if match["start"] else 0
            stop = _bound(match["stop"], n, values, expression) if match["stop"] else n
        except ValueError as exc:
            raise PeftbenchError(str(exc)) from None
        if not 0 <= start <= stop <= n:
            raise PeftbenchError(
                f"{dataset.folder}: split expression {expression!r} asks for examples {start}..{stop} of split "
                f"'{split.name}', which holds {n}; expected a tree with the TFDS split sizes"
            )
        pieces.append(Piece(split.name, start, stop))
    return pieces


def shard_ranges(split: SplitFiles, start: int, stop: int) -> Iterator[tuple[Path, int, int]]:
    """(shard, records to skip, records to read) covering examples [start, stop) of `split`."""
    first = 0
    for path, length in zip(split.shards, split.lengths):
        lo, hi = max(start, first), min(stop, first + length)
        if lo < hi:
            yield path, lo - first, hi - lo
        first += length


def iter_examples(dataset: Dataset, pieces: list[Piece]) -> Iterator[tuple[Path, int, tfrecord.Example]]:
    """(shard, record offset, Example) of the pieces' examples, in order."""
    for piece in pieces:
        for path, skip, count in shard_ranges(dataset.split(piece.split), piece.start, piece.stop):
            for offset, example in tfrecord.read_examples(path, skip, count):
                yield path, offset, example


def read_feature(path: Path, offset: int, key: str) -> bytes:
    """The single bytes value of feature `key` of the record at `offset` (read again, CRCs checked)."""
    try:
        values = tfrecord.parse_example(tfrecord.read_record(path, offset)).get(key)
    except ValueError as exc:
        raise PeftbenchError(f"{path}: record at byte {offset}: {exc}") from None
    if not values or len(values) != 1 or not isinstance(values[0], bytes):
        raise PeftbenchError(f"{path}: record at byte {offset}: no single encoded image in feature '{key}'")
    return values[0]


# ---- a task's split -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskSplit:
    """A split of a task read from a TFDS tree: lazily loaded images, labels, and the shards read."""

    images: list[EncodedImage]
    labels: list[int]
    dataset: Dataset
    pieces: list[Piece]

    @property
    def shards(self) -> list[Path]:
        """Every shard of the TFDS splits the pieces cut (their content decides the split's)."""
        names = dict.fromkeys(piece.split for piece in self.pieces)
        return [path for name in names for path in self.dataset.split(name).shards]


def task_dataset(task: TfdsTask, root: Path) -> Dataset:
    return read_dataset(version_dir(root, task.dataset, task.version))


def read_task_split(task: TfdsTask, root: Path, split: str) -> TaskSplit:
    """`split` (train800, val200, train800val200, test) of `task` under `root`, labels checked."""
    if split not in task.splits:
        raise PeftbenchError(f"task {task.name} defines no split '{split}' (splits: {', '.join(task.splits)})")
    dataset = task_dataset(task, root)
    pieces = resolve(task.splits[split], dataset, task.counts)
    rule = label_rule(task.label["rule"], {k: v for k, v in task.label.items() if k != "rule"}, task.num_classes)
    images: list[EncodedImage] = []
    labels: list[int] = []
    for path, offset, example in iter_examples(dataset, pieces):
        where = f"{path}: record at byte {offset}"
        try:
            label = rule(example)
        except LabelError as exc:
            raise PeftbenchError(f"{where}: {exc}") from None
        if not 0 <= label < task.num_classes:
            raise PeftbenchError(f"{where}: label {label} outside 0..{task.num_classes - 1} for {task.name}")
        if task.image not in example:
            raise PeftbenchError(f"{where}: no image feature '{task.image}'")
        load: Callable[[], bytes] = functools.partial(read_feature, path, offset, task.image)
        images.append(EncodedImage(f"{where}, feature '{task.image}'", load, task.pixel_scale))
        labels.append(label)
    if not images:
        raise PeftbenchError(f"{dataset.folder}: split '{split}' of {task.name} ({task.splits[split]}) is empty")
    return TaskSplit(images, labels, dataset, pieces)


def sampled_digest(paths: list[Path], sample: Callable[[Path, int], str]) -> list[dict[str, Any]]:
    """Name, size and sampled sha256 of each shard: what a cache lookup keys on (cheap for large shards)."""
    return [{"file": p.name, "bytes": p.stat().st_size, "sha256_sampled": sample(p, p.stat().st_size)} for p in paths]
