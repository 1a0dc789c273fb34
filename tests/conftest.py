"""Shared fixtures: VTAB-1k trees written in the real on-disk format, small enough for a CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

COLOURS = np.array([(220, 40, 40), (40, 70, 220), (40, 165, 60), (240, 225, 50)], dtype=np.float32)


def colour_image(rng: np.random.Generator, label: int, size: int) -> np.ndarray:
    """A noisy image whose dominant colour is its class: separable, but not constant."""
    noise = rng.normal(0, 25, (size, size, 3))
    return np.clip(COLOURS[label] + noise, 0, 255).astype(np.uint8)


def write_vtab_task(
    root: Path,
    folder: str,
    sizes: dict[str, int] | None = None,
    num_classes: int = 2,
    image_size: int = 32,
    suffix: str = ".jpg",
    seed: int = 0,
) -> Path:
    """A task folder in the VTAB-1k layout: images/<split>/NNNNNN.jpg and the four list files."""
    sizes = sizes or {"train800": 48, "val200": 16, "test": 48}
    rng = np.random.default_rng(seed)
    task_dir = root / folder
    lines: dict[str, list[str]] = {}
    for split, count in sizes.items():
        (task_dir / "images" / split).mkdir(parents=True, exist_ok=True)
        lines[split] = []
        for i in range(count):
            label = i % num_classes
            relative = f"images/{split}/{i:06d}{suffix}"
            Image.fromarray(colour_image(rng, label, image_size)).save(task_dir / relative, quality=95)
            lines[split].append(f"{relative} {label}")
    lines["train800val200"] = lines["train800"] + lines["val200"]
    for split, entries in lines.items():
        (task_dir / f"{split}.txt").write_text("\n".join(entries) + "\n")
    return task_dir


@pytest.fixture
def vtab_root(tmp_path: Path) -> Path:
    """A VTAB-1k data root holding one small two-class task under the folder `cifar`."""
    root = tmp_path / "vtab-1k"
    write_vtab_task(root, "cifar")
    return root


@pytest.fixture(autouse=True, scope="session")
def private_cache(tmp_path_factory):
    """The decode-once cache of the whole test session lives in a temporary folder."""
    import os

    os.environ["PEFTBENCH_CACHE"] = str(tmp_path_factory.mktemp("cache"))
