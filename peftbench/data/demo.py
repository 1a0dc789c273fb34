"""The embedded `demo` suite: four generated 32x32 classification tasks in the VTAB-1k layout.

Each task renders one image for a given (or random) label. `write_demo_task` writes a task folder:
PNGs under `images/<split>/<6-digit index>.png` and the list files `train800.txt`, `val200.txt`,
`train800val200.txt` and `test.txt` (lines `<relative path> <label>`), the list files last and
atomically, `test.txt` the very last: a folder without `test.txt` is incomplete.
"""
from __future__ import annotations

import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from . import scenes as sc

SPLITS: tuple[str, ...] = ("train800", "val200", "test")
_DEMO_TAG = zlib.crc32(b"peftbench/demo")  # differs from the upstream tag: disjoint seed streams

Render = Callable[..., tuple[np.ndarray, int]]


@dataclass(frozen=True)
class DemoTask:
    """A generated task: `render(rng, label=None)` returns uint8 (32, 32, 3) and its label.

    With `label=None` the label is drawn uniformly from `range(num_classes)`.
    """

    name: str
    num_classes: int
    render: Render


def _label(rng: np.random.Generator, label: int | None, num_classes: int) -> int:
    """`label` itself, or a uniformly drawn one when it is None."""
    return int(rng.integers(num_classes)) if label is None else int(label)


def _distinct_colours(rng: np.random.Generator, min_distance: float = 90.0) -> tuple[np.ndarray,
                                                                                      np.ndarray]:
    """Two random RGB colours at least `min_distance` apart."""
    c0 = sc.random_colour(rng)
    while True:
        c1 = sc.random_colour(rng)
        if np.linalg.norm(c1 - c0) >= min_distance:
            return c0, c1


def _contrasting_palette_colour(rng: np.random.Generator, background: np.ndarray,
                                min_distance: float = 100.0) -> np.ndarray:
    """A jittered palette colour at least `min_distance` from `background` (RGB, float32 (3,))."""
    while True:
        colour = sc.palette_colour(rng, int(rng.integers(len(sc.PALETTE))), jitter=25.0)
        if np.linalg.norm(colour - background) >= min_distance:
            return colour


# ---- textures (natural-like) ----------------------------------------------------------------

TEXTURE_CLASSES = ("horizontal_stripes", "vertical_stripes", "diagonal_stripes", "checkerboard",
                   "dots", "blotches")
_STRIPE_ANGLES = {"horizontal_stripes": (0.0,), "vertical_stripes": (np.pi / 2,),
                  "diagonal_stripes": (np.pi / 4, 3 * np.pi / 4)}


def _texture_pattern(rng: np.random.Generator, label: int) -> np.ndarray:
    """Pattern in [0, 1] of texture class `label`, with random scale, phase and small tilt."""
    tilt = rng.uniform(-0.25, 0.25)
    period = rng.uniform(3.5, 11.0)
    phase = (rng.random(), rng.random())
    name = TEXTURE_CLASSES[label]
    if name in _STRIPE_ANGLES:
        angle = float(rng.choice(_STRIPE_ANGLES[name]))
        return sc.stripes(angle + tilt, period, 2 * np.pi * phase[0], rng.uniform(0.6, 4.0))
    if name == "checkerboard":
        return sc.checkerboard(tilt, period * 1.5, phase)
    if name == "dots":
        return sc.dots(period, rng.uniform(0.2, 0.35) * period, tilt, phase)
    return sc.blotches(rng, int(rng.integers(4, 11)), rng.uniform(1.5, 4.0))


def render_textures(rng: np.random.Generator, label: int | None = None) -> tuple[np.ndarray, int]:
    """Which of 6 texture patterns fills the image; random colours, lighting and pixel noise."""
    label = _label(rng, label, len(TEXTURE_CLASSES))
    c0, c1 = _distinct_colours(rng, 50.0)
    image = sc.colourise(_texture_pattern(rng, label), c0, c1)
    lighting = 1 + rng.uniform(0, 0.6) * (sc.gradient(rng.uniform(0, 2 * np.pi)) - 0.5)
    image = sc.add_noise(rng, image * lighting, rng.uniform(5, 35))
    return sc.to_uint8(image), label


# ---- landcover (specialized-like, EuroSAT-style tiles) --------------------------------------

LANDCOVER_CLASSES = ("water", "forest", "fields", "urban", "desert")


def _jittered(rng: np.random.Generator, rgb: tuple[float, ...], jitter: float) -> np.ndarray:
    """`rgb` with uniform per-channel jitter, float32 (3,)."""
    return np.clip(np.asarray(rgb, np.float32) + rng.uniform(-jitter, jitter, 3), 0, 255).astype(
        np.float32)


def _water(rng: np.random.Generator) -> np.ndarray:
    """Dark blue-ish surface with smooth variation and faint ripples."""
    base = _jittered(rng, (35, 75, 120), 30)
    ripples = sc.stripes(rng.uniform(0, np.pi), rng.uniform(3, 7), rng.uniform(0, 6.3), 0.5)
    pattern = 0.7 * sc.smooth_noise(rng, int(rng.integers(2, 5))) + 0.3 * ripples
    return sc.colourise(pattern, base, sc.shade(base, rng.uniform(0.1, 0.3)))


def _forest(rng: np.random.Generator) -> np.ndarray:
    """Fine blotchy green canopy with dark shadows."""
    base = _jittered(rng, (45, 85, 45), 30)
    canopy = sc.blotches(rng, int(rng.integers(9, 17)), rng.uniform(1.0, 2.5))
    return sc.colourise(canopy, base * rng.uniform(0.4, 0.7), base)


_FIELD_COLOURS = ((110, 160, 60), (195, 185, 90), (140, 110, 70), (70, 120, 50), (170, 160, 120))


def _fields(rng: np.random.Generator) -> np.ndarray:
    """Parallel strips of crop colours at a random angle."""
    _, v = sc.rotated_coords(rng.uniform(0, np.pi))
    edges = np.cumsum(rng.uniform(3, 9, 12)) - rng.uniform(23, 30)
    strip = np.searchsorted(edges, v)
    colours = np.stack([_jittered(rng, _FIELD_COLOURS[i], 20)
                        for i in rng.integers(len(_FIELD_COLOURS), size=len(edges) + 1)])
    image = colours[strip].transpose(2, 0, 1)
    return image * (0.85 + 0.3 * sc.smooth_noise(rng, int(rng.integers(6, 12))))


def _urban(rng: np.random.Generator) -> np.ndarray:
    """Grey road grid, slightly rotated, around blocks of random roof colours."""
    u, v = sc.rotated_coords(rng.uniform(-0.4, 0.4))
    period = rng.uniform(6, 11)
    cu, cv = u / period + rng.random(), v / period + rng.random()
    road_width = rng.uniform(0.12, 0.25)
    roads = ((cu % 1) < road_width) | ((cv % 1) < road_width)
    iu, iv = (cu - cu.min()).astype(int), (cv - cv.min()).astype(int)
    roofs = rng.uniform(70, 220, (iu.max() + 1, iv.max() + 1, 3)).astype(np.float32)
    roofs[..., 0] += rng.uniform(0, 40, roofs.shape[:2])  # some reddish tiles
    image = roofs[iu, iv].transpose(2, 0, 1)
    road = _jittered(rng, (105, 105, 105), 30)
    return np.where(roads, road[:, None, None], image)


def _desert(rng: np.random.Generator) -> np.ndarray:
    """Sand with low-contrast wavy dunes."""
    base = _jittered(rng, (205, 170, 115), 30)
    u, v = sc.rotated_coords(rng.uniform(0, np.pi))
    wobble = rng.uniform(1, 3) * np.sin(u / rng.uniform(3, 6) + rng.uniform(0, 6.3))
    dunes = 0.5 + 0.5 * np.sin(2 * np.pi * (v + wobble) / rng.uniform(6, 14))
    pattern = 0.7 * dunes + 0.3 * sc.smooth_noise(rng, int(rng.integers(3, 7)))
    return sc.colourise(pattern, sc.shade(base, rng.uniform(0.1, 0.3)), base)


_LANDCOVER_RENDERERS = (_water, _forest, _fields, _urban, _desert)


def _intrusion_mask(rng: np.random.Generator, fraction: float) -> np.ndarray:
    """Soft blob mask in [0, 1] covering about `fraction` of the tile."""
    field = sc.smooth_noise(rng, int(rng.integers(2, 5)))
    return np.clip((field - np.quantile(field, 1 - fraction)) * 8 + 0.5, 0, 1)


def render_landcover(rng: np.random.Generator, label: int | None = None) -> tuple[np.ndarray, int]:
    """Aerial-like land-cover tile of the labelled (majority) class, often with a minority patch
    (up to 35 %) of another class; brightness and colour jittered so colour alone is ambiguous."""
    label = _label(rng, label, len(LANDCOVER_CLASSES))
    image = _LANDCOVER_RENDERERS[label](rng)
    if rng.random() < 0.6:
        other = (label + int(rng.integers(1, len(LANDCOVER_CLASSES)))) % len(LANDCOVER_CLASSES)
        mask = _intrusion_mask(rng, rng.uniform(0.1, 0.35))
        image = image + mask * (_LANDCOVER_RENDERERS[other](rng) - image)
    shift = rng.uniform(-25, 25, 3).astype(np.float32)[:, None, None]
    image = image * rng.uniform(0.7, 1.3) + shift
    return sc.to_uint8(sc.add_noise(rng, image, rng.uniform(3, 12))), label


# ---- count (structured-like, CLEVR-count style) ---------------------------------------------

def _count_background(rng: np.random.Generator) -> np.ndarray:
    """Plain or low-contrast textured (stripes, checkerboard, noise) background, random colour."""
    base = sc.random_colour(rng)
    kind = int(rng.integers(4))
    angle, period, phase = rng.uniform(0, np.pi), rng.uniform(4, 10), (rng.random(), rng.random())
    if kind == 0:
        pattern = np.zeros((sc.SIZE, sc.SIZE), np.float32)
    elif kind == 1:
        pattern = sc.stripes(angle, period, 2 * np.pi * phase[0])
    elif kind == 2:
        pattern = sc.checkerboard(angle, period, phase)
    else:
        pattern = sc.smooth_noise(rng, int(rng.integers(3, 8)))
    return sc.colourise(pattern, base, sc.shade(base, rng.uniform(0.1, 0.3)))


def render_count(rng: np.random.Generator, label: int | None = None) -> tuple[np.ndarray, int]:
    """Label = number of objects - 1 (1..6 objects of random shape, colour and size)."""
    label = _label(rng, label, 6)
    image = _count_background(rng)
    background = image.mean(axis=(1, 2))
    radii = rng.uniform(2.5, 4.5, label + 1)
    for centre, radius in zip(sc.place_centres(rng, radii, spacing=1.0), radii):
        shape = sc.SHAPES[int(rng.integers(len(sc.SHAPES)))]
        mask = sc.shape_mask(shape, *centre, radius, rng.uniform(0, 2 * np.pi))
        image = sc.paste(image, mask, _contrasting_palette_colour(rng, background))
    return sc.to_uint8(sc.add_noise(rng, image, rng.uniform(3, 12))), label


# ---- position (structured-like, dSprites x-position style) ----------------------------------

POSITION_BINS = 5


def render_position(rng: np.random.Generator, label: int | None = None) -> tuple[np.ndarray, int]:
    """Label = horizontal bin (5 equal bins) of one small shape's centre on a noisy background."""
    label = _label(rng, label, POSITION_BINS)
    c0, c1 = _distinct_colours(rng, 40.0)
    image = sc.colourise(sc.smooth_noise(rng, int(rng.integers(2, 7))), c0, c1)
    background = image.mean(axis=(1, 2))
    radius = rng.uniform(2.5, 4.0)
    width = sc.SIZE / POSITION_BINS
    x = rng.uniform(max(label * width, 2.0), min((label + 1) * width, sc.SIZE - 2.0))
    y = rng.uniform(radius, sc.SIZE - radius)
    shape = sc.SHAPES[int(rng.integers(len(sc.SHAPES)))]
    mask = sc.shape_mask(shape, x, y, radius, rng.uniform(0, 2 * np.pi))
    image = sc.paste(image, mask, _contrasting_palette_colour(rng, background))
    return sc.to_uint8(sc.add_noise(rng, image, rng.uniform(5, 20))), label


DEMO_TASKS: dict[str, DemoTask] = {
    task.name: task for task in (
        DemoTask("textures", len(TEXTURE_CLASSES), render_textures),
        DemoTask("landcover", len(LANDCOVER_CLASSES), render_landcover),
        DemoTask("count", 6, render_count),
        DemoTask("position", POSITION_BINS, render_position),
    )
}


# ---- writing the VTAB-1k layout -------------------------------------------------------------

def split_rng(name: str, split: str, seed: int = 0) -> np.random.Generator:
    """The generator for one (task, split): stable across runs and Python processes."""
    entropy = [_DEMO_TAG, seed, zlib.crc32(name.encode()), SPLITS.index(split)]
    return np.random.default_rng(np.random.SeedSequence(entropy))


def render_split(name: str, split: str, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`n` images uint8 (n, 32, 32, 3) and int64 labels of one split of task `name`.

    Labels are balanced (class counts differ by at most 1) and deterministically shuffled.
    """
    task = DEMO_TASKS[name]
    rng = split_rng(name, split, seed)
    labels = rng.permutation(np.arange(n) % task.num_classes)
    images = np.empty((n, sc.SIZE, sc.SIZE, 3), np.uint8)
    for i, label in enumerate(labels):
        images[i], _ = task.render(rng, int(label))
    return images, labels.astype(np.int64)


def _write_atomic(path: Path, text: str) -> None:
    """Write `text` to a temporary sibling, then rename it to `path`."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(text.encode())
    os.replace(tmp, path)


def write_demo_task(task_dir: Path, name: str, split_sizes: dict[str, int], seed: int = 0) -> None:
    """Write task `name` to `task_dir` in the VTAB-1k layout; same arguments, identical bytes.

    `split_sizes` maps "train800", "val200" and "test" to image counts (a "train800val200" entry,
    if any, must equal the sum of the first two). Existing list files are removed first, so an
    interrupted run leaves no `test.txt`.
    """
    if name not in DEMO_TASKS:
        raise ValueError(f"unknown demo task {name!r}; valid: {', '.join(DEMO_TASKS)}")
    combined = split_sizes.get("train800val200")
    if combined is not None and combined != split_sizes["train800"] + split_sizes["val200"]:
        raise ValueError("split_sizes['train800val200'] must equal train800 + val200")
    task_dir = Path(task_dir)
    task_dir.mkdir(parents=True, exist_ok=True)
    for list_name in ("test", "train800val200", "val200", "train800"):
        (task_dir / f"{list_name}.txt").unlink(missing_ok=True)
    lines: dict[str, list[str]] = {}
    for split in SPLITS:
        split_dir = task_dir / "images" / split
        split_dir.mkdir(parents=True, exist_ok=True)
        images, labels = render_split(name, split, split_sizes[split], seed)
        lines[split] = []
        for i, (image, label) in enumerate(zip(images, labels)):
            Image.fromarray(image).save(split_dir / f"{i:06d}.png", format="PNG")
            lines[split].append(f"images/{split}/{i:06d}.png {label}\n")
    lines["train800val200"] = lines["train800"] + lines["val200"]
    for list_name in ("train800", "val200", "train800val200", "test"):  # test.txt last
        _write_atomic(task_dir / f"{list_name}.txt", "".join(lines[list_name]))
