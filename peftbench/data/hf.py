"""Task folders as Hugging Face dataset files, read with the `datasets` library from local files only.

Two layouts of `<data-root>/<task>/` are read:

- parquet files, assigned to splits by the rules of the datasets library's `data_files.py` (see "File names
  and splits", https://huggingface.co/docs/hub/datasets-file-names-and-splits): first the sharded pattern
  `data/<split>-NNNNN-of-NNNNN*.parquet` (any split name), else a directory named after the split
  (`<split>/*.parquet`, `data/<split>/*.parquet`), else the split's name in the file name, delimited by
  `-`, `_`, `.` or a space (`train800.parquet`, `my_test_file.parquet`). Unlike the library, a digit
  before the name does not delimit it, so `train800val200` is not also `val200`;
- a `save_to_disk` folder: `dataset_dict.json` and `<split>/{data-*.arrow, dataset_info.json, state.json}`
  (https://huggingface.co/docs/datasets/process#save), read with `datasets.load_from_disk`.

Split names are the suite's own (VTAB-1k: train800, val200, train800val200, test; FGVC: train, val,
trainval, test), plus the library's synonyms where they cannot be confused: validation / valid / dev for
FGVC's val, testing / eval / evaluation for test. A missing union split is the union of its parts, as
VTAB-1k and VPT's FGVC define it: train800val200 = train800 + val200, trainval = train + val.

Each row needs an image column (`image` or `img`: the `Image` feature, a struct {bytes, path}, or plain
binary; a struct without bytes is read from its path, relative to the task folder) and a label column
(`label` or `labels`, integers 0..C-1). Images stay encoded: each is an
`EncodedImage` named `<file> row <i>`, decoded once by the decode-once cache.

Copies: parquet is read with `load_dataset("parquet", data_files=..., split=..., streaming=True)`, which
reads the files where they lie and prepares no Arrow copy (a non-streaming load would write every image's
bytes a second time, into the library's cache); a split's encoded bytes are held in memory only while it
is decoded, and a label-only pass (data check without --deep) reads just the label column. A save_to_disk
folder is already Arrow: `load_from_disk` memory-maps it, and each image's bytes are read when it is decoded.
Every call runs with HF_HUB_OFFLINE / HF_DATASETS_OFFLINE set and a cache_dir under peftbench's cache, so
nothing reaches the network or ~/.cache/huggingface.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from ..errors import PeftbenchError
from .images import EncodedImage

INSTALL_HINT = 'pip install "peftbench[hf]"'
IMAGE_COLUMNS = ("image", "img")
LABEL_COLUMNS = ("label", "labels")
DATASET_DICT = "dataset_dict.json"
SHARDED = re.compile(r"^data/(?P<split>[\w.-]+?)-\d{5}-of-\d{5}[^/]*\.parquet$")  # data_files.SPLIT_PATTERN_SHARDED
SPLITS = {
    "vtab1k": {
        "train800": ("train800",),
        "val200": ("val200",),
        "train800val200": ("train800val200",),
        "test": ("test", "testing", "eval", "evaluation"),
    },
    "fgvc": {
        "train": ("train", "training"),
        "val": ("val", "validation", "valid", "dev"),
        "trainval": ("trainval",),
        "test": ("test", "testing", "eval", "evaluation"),
    },
}
UNIONS = {"train800val200": ("train800", "val200"), "trainval": ("train", "val")}
REQUIRED = {"vtab1k": ("train800", "val200", "test"), "fgvc": ("train", "val", "test")}


@dataclass(frozen=True)
class HfTask:
    """One task folder: its kind (`parquet` or `arrow`) and the sources of each split found (parquet
    files, or the one save_to_disk split folder)."""

    folder: Path
    kind: str
    splits: dict[str, tuple[Path, ...]]

    def sources(self, split: str) -> list[Path]:
        """The sources of `split`, or of its parts when the union split is absent."""
        if split in self.splits:
            return list(self.splits[split])
        if split in UNIONS and all(part in self.splits for part in UNIONS[split]):
            return [source for part in UNIONS[split] for source in self.splits[part]]
        found = ", ".join(self.splits) or "none"
        raise PeftbenchError(
            f"{self.folder}: no {self.kind} data for split '{split}' (splits found: {found}); expected "
            + (
                f"{DATASET_DICT} listing '{split}'"
                if self.kind == "arrow"
                else f"data/{split}-00000-of-00001.parquet, {split}/*.parquet or {split}.parquet"
            )
        )

    def files(self, split: str) -> list[Path]:
        """Every file `split` is read from (a save_to_disk split: the files of its folder), for cache keys."""
        sources = self.sources(split)
        if self.kind == "parquet":
            return sources
        return [path for folder in sources for path in sorted(folder.iterdir()) if path.is_file()]


def is_hf_folder(folder: Path) -> bool:
    """Whether a task folder holds a save_to_disk dataset or parquet files where the library's split
    patterns put them (`*.parquet`, `<dir>/*.parquet`, `data/<split>/*.parquet`): never a scan of a JPEG
    release's image folders, which hold up to 74k files each."""
    if (folder / DATASET_DICT).is_file():
        return True
    return any(
        next(folder.glob(pattern), None) is not None for pattern in ("*.parquet", "*/*.parquet", "data/*/*.parquet")
    )


def find_task(folder: Path, layout: str) -> HfTask:
    """The HF layout of a task folder of a `layout` suite (vtab1k or fgvc)."""
    if layout not in SPLITS:
        raise PeftbenchError(f"the '{layout}' layout has no Hugging Face split names; expected vtab1k or fgvc")
    if (folder / DATASET_DICT).is_file():
        return _saved_task(folder, layout)
    files = sorted(p for p in folder.rglob("*.parquet") if not _hidden(p.relative_to(folder)))
    if not files:
        raise PeftbenchError(
            f"{folder}: no parquet files and no {DATASET_DICT}; expected Hugging Face dataset files "
            f"(data/<split>-00000-of-00001.parquet, or a save_to_disk folder)"
        )
    splits: dict[str, list[Path]] = {}
    for path, split in _assign(folder, files, layout).items():
        splits.setdefault(split, []).append(path)
    task = HfTask(folder, "parquet", {s: tuple(splits[s]) for s in SPLITS[layout] if s in splits})
    for split in REQUIRED[layout]:
        task.sources(split)  # a missing split is named here rather than mid-run
    return task


def _hidden(relative: Path) -> bool:
    """Hidden or special (`.x`, `__x`) parts are skipped, as the datasets library skips them."""
    return any(part.startswith((".", "__")) for part in relative.parts)


def _canonical(name: str, layout: str) -> str | None:
    """The suite split a split name stands for (the name itself or a synonym), or None."""
    for split, names in SPLITS[layout].items():
        if name.lower() in names:
            return split
    return None


def _named(name: str, layout: str) -> set[str]:
    """The suite splits whose names appear delimited in `name` (a file or folder name)."""
    found = set()
    for split, names in SPLITS[layout].items():
        for keyword in names:
            if re.search(rf"(?:^|[-._ ]){re.escape(keyword)}(?:[-._ 0-9]|$)", name.lower()):
                found.add(split)
    return found


def _assign(folder: Path, files: list[Path], layout: str) -> dict[Path, str]:
    """Each parquet file's split: by the sharded pattern when any file fits it (as the library decides),
    else by a split folder, else by the file name; files fitting no split are left out (as the library
    leaves them out), a file fitting two splits is an error."""
    relative = {path: path.relative_to(folder).as_posix() for path in files}
    sharded = {path: SHARDED.match(rel) for path, rel in relative.items()}
    if any(sharded.values()):
        return {p: s for p, m in sharded.items() if m and (s := _canonical(m["split"], layout)) is not None}
    assigned = {}
    for path, rel in relative.items():
        *folders, name = rel.split("/")
        splits = set().union(*(_named(part, layout) for part in folders)) or _named(name.rsplit(".", 1)[0], layout)
        if len(splits) > 1:
            raise PeftbenchError(f"{path}: the name fits several splits ({', '.join(sorted(splits))}); expected one")
        if splits:
            assigned[path] = splits.pop()
    return assigned


def _saved_task(folder: Path, layout: str) -> HfTask:
    """A save_to_disk DatasetDict: its splits from dataset_dict.json, each a folder beside it."""
    path = folder / DATASET_DICT
    try:
        names = json.loads(path.read_text())["splits"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PeftbenchError(f'{path}: unreadable ({exc}); expected {{"splits": [<split>, ...]}}') from None
    splits: dict[str, tuple[Path, ...]] = {}
    for name in names:
        split = _canonical(str(name), layout)
        if split is None:
            continue
        if not (folder / name / "state.json").is_file():
            raise PeftbenchError(f"{folder / name}: missing state.json; expected a save_to_disk split folder")
        splits[split] = (folder / name,)
    task = HfTask(folder, "arrow", {s: splits[s] for s in SPLITS[layout] if s in splits})
    for split in REQUIRED[layout]:
        task.sources(split)
    return task


# ---- reading with the datasets library ---------------------------------------------------------------


def _datasets():
    try:
        import datasets
    except ImportError:
        raise PeftbenchError(f"reading Hugging Face dataset files needs the datasets library: {INSTALL_HINT}") from None
    return datasets


@contextlib.contextmanager
def _offline(datasets) -> Iterator[None]:
    """HF_HUB_OFFLINE / HF_DATASETS_OFFLINE for the duration of a call (environment and the library's config)."""
    saved_env = {name: os.environ.get(name) for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    saved_config = datasets.config.HF_HUB_OFFLINE, datasets.config.HF_DATASETS_OFFLINE
    os.environ.update(dict.fromkeys(saved_env, "1"))
    datasets.config.HF_HUB_OFFLINE = datasets.config.HF_DATASETS_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, datasets.config.HF_DATASETS_OFFLINE = saved_config
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _columns(features: Any, origin: Path) -> tuple[str, str]:
    """The image and label column names of a file's features (its schema: no row is read); a one-line
    error when one is missing, even for a label-only pass."""
    found = list(features or {})
    image = next((c for c in IMAGE_COLUMNS if c in found), None)
    label = next((c for c in LABEL_COLUMNS if c in found), None)
    if label is None or image is None:
        raise PeftbenchError(
            f"{origin}: columns {', '.join(found) or 'none'}; expected an image column "
            f"({' or '.join(IMAGE_COLUMNS)}) and a label column ({' or '.join(LABEL_COLUMNS)})"
        )
    dtype = getattr(features[label], "dtype", None)
    if not (isinstance(dtype, str) and (dtype.startswith("int") or dtype.startswith("uint"))):
        raise PeftbenchError(f"{origin}: column '{label}' holds {features[label]}; expected integer labels")
    return image, label


def _checked_label(value: Any, origin: Path, row: int, num_classes: int) -> int:
    if type(value) is not int or not 0 <= value < num_classes:
        raise PeftbenchError(f"{origin} row {row}: label {value!r} outside 0..{num_classes - 1} for this task")
    return value


def _encoded(value: Any, origin: str, base: Path) -> bytes:
    """An image cell's encoded bytes: the `Image` struct's bytes, else the file at its path, or plain binary."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, dict):
        if value.get("bytes"):
            return value["bytes"]
        if value.get("path"):
            path = Path(value["path"]) if os.path.isabs(value["path"]) else base / value["path"]
            try:
                return path.read_bytes()
            except OSError as exc:
                raise PeftbenchError(
                    f"{origin}: image path {value['path']!r} cannot be read ({exc.strerror})"
                ) from None
    raise PeftbenchError(f"{origin}: empty or unknown image cell; expected an Image struct {{bytes, path}} or binary")


def _image(origin: str, load: Callable[[], Any], base: Path) -> EncodedImage:
    return EncodedImage(origin, lambda: _encoded(load(), origin, base))


def read_split(
    task: HfTask, split: str, num_classes: int, cache_dir: Path, images: bool = True
) -> tuple[list[EncodedImage], list[int]]:
    """A split's images (encoded, named `<file> row <i>`) and labels, every label checked against
    0..num_classes-1; with `images=False` only the labels are read and the image list is empty."""
    datasets = _datasets()
    out_images: list[EncodedImage] = []
    labels: list[int] = []
    with _offline(datasets):
        for source in task.sources(split):
            read = _read_parquet if task.kind == "parquet" else _read_saved
            file_images, file_labels = read(datasets, source, task.folder, num_classes, cache_dir, images)
            out_images.extend(file_images)
            labels.extend(file_labels)
    if not labels:
        raise PeftbenchError(f"{task.folder}: split '{split}' holds no rows")
    return out_images, labels


def _read_parquet(datasets, path: Path, base: Path, num_classes: int, cache_dir: Path, images: bool):
    """One parquet file, streamed (no Arrow copy is prepared); the image bytes are kept when `images`."""
    try:
        stream = datasets.load_dataset(
            "parquet", data_files={"rows": [str(path)]}, split="rows", streaming=True, cache_dir=str(cache_dir)
        )
        image, label = _columns(stream.features, path)
        wanted = [label] + ([image] if images else [])
        stream = stream.select_columns(wanted)
        if images and isinstance(stream.features[image], datasets.Image):
            stream = stream.cast_column(image, datasets.Image(decode=False))
        out_images, labels = [], []
        for batch in stream.iter(batch_size=1024):
            for value in batch[label]:
                labels.append(_checked_label(value, path, len(labels), num_classes))
            if images:
                for cell in batch[image]:
                    out_images.append(_image(f"{path} row {len(out_images)}", lambda cell=cell: cell, base))
    except PeftbenchError:
        raise
    except Exception as exc:  # pyarrow and the library raise many types for a corrupt or foreign file
        raise PeftbenchError(f"{path}: cannot read as parquet ({type(exc).__name__}: {exc})".splitlines()[0]) from None
    return out_images, labels


def _read_saved(datasets, folder: Path, base: Path, num_classes: int, cache_dir: Path, images: bool):
    """One save_to_disk split, memory-mapped by `load_from_disk`; images read row by row when decoded."""
    try:
        dataset = datasets.load_from_disk(str(folder))
    except Exception as exc:
        raise PeftbenchError(
            f"{folder}: cannot load with load_from_disk ({type(exc).__name__}: {exc})".splitlines()[0]
        ) from None
    image, label = _columns(dataset.features, folder)
    files = [Path(f["filename"]) for f in dataset.cache_files]
    origins = _row_origins(files, len(dataset), folder)
    labels = [
        _checked_label(v, origins(i)[0], origins(i)[1], num_classes)
        for i, v in enumerate(dataset.data.column(label).to_pylist())
    ]
    if not images:
        return [], labels
    column = dataset.data.column(image)  # a memory-mapped Arrow column: cells are read on demand
    out = []
    for i in range(len(dataset)):
        file, row = origins(i)
        out.append(_image(f"{file} row {row}", lambda i=i: column[i].as_py(), base))
    return out, labels


def _row_origins(files: list[Path], count: int, folder: Path) -> Callable[[int], tuple[Path, int]]:
    """Maps a split's row to (its Arrow file, its row in that file), from each file's row count."""
    import pyarrow as pa

    bounds = []
    for path in files:
        with pa.memory_map(str(path)) as source:
            bounds.append(sum(batch.num_rows for batch in pa.ipc.open_stream(source)))
    if sum(bounds) != count:  # not the plain concatenation of its files (e.g. an indices mapping)
        return lambda i: (folder, i)

    starts = list(itertools.accumulate(bounds, initial=0))[:-1]

    def origin(i: int) -> tuple[Path, int]:
        k = bisect.bisect_right(starts, i) - 1
        return files[k], i - starts[k]

    return origin


def digest(task: HfTask, split: str, sampled_sha256: Callable[[Path, int], str]) -> list[dict[str, Any]]:
    """Name (relative to the task folder), size and sampled sha256 of every file `split` is read from."""
    out = []
    for path in task.files(split):
        size = path.stat().st_size
        out.append(
            {"file": path.relative_to(task.folder).as_posix(), "bytes": size, "sha256": sampled_sha256(path, size)}
        )
    return out
