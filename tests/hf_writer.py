"""Writing task folders as Hugging Face dataset files for tests, with the datasets library itself.

`write_parquet_task` writes `Dataset.from_dict(...).to_parquet` files in one of three namings the library
assigns to splits (`sharded`: data/<split>-00000-of-00001.parquet, `folders`: <split>/part-0.parquet,
`names`: <split>.parquet); `write_saved_task` writes a `DatasetDict.save_to_disk` folder. Images are a few
distinct 8x8 PNGs reused across rows. `write_vtab_hf_tree` writes all 19 VTAB-1k tasks with exact
train800 / val200 sizes and a small test split, the four layouts in turn.
Import with `from hf_writer import ...`.
"""

from __future__ import annotations

import io
from pathlib import Path

import datasets
import numpy as np
from PIL import Image

from peftbench.suites import get_suite

LAYOUTS = ("sharded", "folders", "names", "saved")
datasets.disable_progress_bars()


def png(seed: int, size: int = 8) -> bytes:
    """An RGB PNG of random pixels."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def rows(labels: list[int], images: list[bytes] | None = None) -> dict[str, list]:
    """Columns {image, label} for `labels`, the images cycling through `images` (six PNGs by default)."""
    images = images or [png(seed) for seed in range(6)]
    return {"image": [images[i % len(images)] for i in range(len(labels))], "label": list(labels)}


def _dataset(columns: dict[str, list]) -> datasets.Dataset:
    """The columns as a Dataset, an `image`/`img` column of bytes cast to the HF Image feature."""
    dataset = datasets.Dataset.from_dict(columns)
    for name in ("image", "img"):
        if columns.get(name) and isinstance(columns[name][0], bytes):
            dataset = dataset.cast_column(name, datasets.Image())
    return dataset


def parquet_path(folder: Path, split: str, layout: str) -> Path:
    return {
        "sharded": folder / "data" / f"{split}-00000-of-00001.parquet",
        "folders": folder / split / "part-0.parquet",
        "names": folder / f"{split}.parquet",
    }[layout]


def write_parquet_task(folder: Path, splits: dict[str, dict[str, list]], layout: str = "sharded") -> Path:
    """One parquet file per split, named as `layout` says; `splits` maps a split name to its columns."""
    for split, columns in splits.items():
        path = parquet_path(folder, split, layout)
        path.parent.mkdir(parents=True, exist_ok=True)
        _dataset(columns).to_parquet(str(path))
    return folder


def write_saved_task(folder: Path, splits: dict[str, dict[str, list]]) -> Path:
    """A save_to_disk DatasetDict: dataset_dict.json and one Arrow folder per split."""
    datasets.DatasetDict({split: _dataset(columns) for split, columns in splits.items()}).save_to_disk(str(folder))
    return folder


def write_task(folder: Path, splits: dict[str, dict[str, list]], layout: str) -> Path:
    if layout == "saved":
        return write_saved_task(folder, splits)
    return write_parquet_task(folder, splits, layout)


def write_vtab_hf_tree(root: Path, test_size: int = 3) -> Path:
    """The 19 VTAB-1k tasks: train800 (800 rows), val200 (200) and test (`test_size`), labels spread over
    each task's classes; train800val200 is left to be the union. Layouts rotate through LAYOUTS."""
    images = [png(seed) for seed in range(6)]
    for number, task in enumerate(get_suite("vtab").tasks):
        sizes = {"train800": 800, "val200": 200, "test": test_size}
        splits = {
            split: rows([(i * 7 + len(split)) % task.num_classes for i in range(count)], images)
            for split, count in sizes.items()
        }
        write_task(root / task.name, splits, LAYOUTS[number % len(LAYOUTS)])
    return root
