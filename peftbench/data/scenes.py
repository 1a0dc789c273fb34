"""Deterministic synthetic 32x32 RGB scenes: textures, shapes and the upstream pre-training task.

Images are built channel-first, float32 (3, 32, 32) RGB in 0..255 (faster broadcasting than
channels-last at this size), and converted to uint8 (32, 32, 3) by `to_uint8`. Textures are
patterns in [0, 1] that `colourise` maps between two colours; shapes are anti-aliased masks from
signed distances. The upstream task draws one broad scene per image and labels many attributes.
"""

from __future__ import annotations

import math
import zlib

import numpy as np

SIZE = 32

_YY, _XX = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) + 0.5

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (245, 140, 20),
    "yellow": (240, 225, 50),
    "green": (40, 165, 60),
    "cyan": (40, 200, 210),
    "blue": (40, 70, 220),
    "purple": (145, 50, 200),
    "pink": (245, 130, 190),
    "white": (240, 240, 240),
    "black": (20, 20, 20),
}
_PALETTE_RGB = np.array(list(PALETTE.values()), dtype=np.float32)

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "ring", "cross", "bar")
# Rotational symmetry period of each shape in radians (0: no orientation).
_SYMMETRY = {
    "circle": 0.0,
    "ring": 0.0,
    "square": np.pi / 2,
    "cross": np.pi / 2,
    "triangle": 2 * np.pi / 3,
    "bar": np.pi,
}

BACKGROUNDS: tuple[str, ...] = ("plain", "gradient", "stripes", "checker", "dots", "noise")

UPSTREAM_ATTRIBUTES: dict[str, int] = {
    "background": len(BACKGROUNDS),
    "bg_colour": len(PALETTE),
    "bg_orientation": 5,  # 0: none (plain, checker, dots, noise), else 4 bins of angle mod 180 deg
    "bg_period": 4,  # 0: none (plain, gradient, noise), else fine / medium / coarse
    "count": 5,  # number of objects minus 1 (1..5 objects)
    "shape": len(SHAPES),  # of the main (largest) object, as are the attributes below
    "colour": len(PALETTE),
    "x_bin": 4,
    "y_bin": 4,
    "size": 3,
    "orientation": 5,  # 0: none (circle, ring), else 4 bins of angle mod the shape's symmetry
    "noise": 3,
}

_UPSTREAM_TAG = zlib.crc32(b"peftbench/upstream")
_NOISE_BANK = np.random.default_rng(zlib.crc32(b"peftbench/noise")).standard_normal(1 << 20, dtype=np.float32)
_MAIN_RADIUS = (5.0, 9.0)
_SMALL_RADIUS = (2.0, 3.5)
_BG_PERIODS = ((3.0, 5.0), (5.0, 8.0), (8.0, 13.0))
_NOISE_SIGMAS = (2.0, 9.0, 18.0)


# ---- colours -------------------------------------------------------------------------------


def palette_colour(rng: np.random.Generator, index: int, jitter: float = 20.0) -> np.ndarray:
    """Palette colour `index` with uniform per-channel jitter, float32 (3,)."""
    return np.clip(_PALETTE_RGB[index] + rng.uniform(-jitter, jitter, 3), 0, 255).astype(np.float32)


def random_colour(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random RGB colour, float32 (3,)."""
    return rng.uniform(0, 255, 3).astype(np.float32)


def shade(colour: np.ndarray, amount: float) -> np.ndarray:
    """`colour` moved by `amount` in [0, 1] towards white (if dark) or black (if light)."""
    target = 0.0 if colour.mean() > 127 else 255.0
    return colour + amount * (target - colour)


# ---- textures: float32 (32, 32) patterns in [0, 1] -------------------------------------------


def rotated_coords(angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (u, v) about the image centre, rotated by `angle` radians."""
    x, y = _XX - SIZE / 2, _YY - SIZE / 2
    c, s = float(np.cos(angle)), float(np.sin(angle))
    return x * c + y * s, -x * s + y * c


def stripes(angle: float, period: float, phase: float, sharpness: float = 4.0) -> np.ndarray:
    """Stripes whose bands run along `angle` (0: horizontal), repeating every `period` pixels."""
    _, v = rotated_coords(angle)
    wave = np.sin(2 * np.pi * v / period + phase)
    return np.clip(0.5 + sharpness * wave, 0, 1)


def checkerboard(angle: float, period: float, phase: tuple[float, float]) -> np.ndarray:
    """Checkerboard with square side `period` / 2, rotated by `angle`."""
    u, v = rotated_coords(angle)
    cells = np.floor(2 * u / period + phase[0]) + np.floor(2 * v / period + phase[1])
    return (cells % 2).astype(np.float32)


def dots(period: float, radius: float, angle: float, phase: tuple[float, float]) -> np.ndarray:
    """A rotated square lattice of anti-aliased discs of `radius` every `period` pixels."""
    u, v = rotated_coords(angle)
    du = (u / period + phase[0]) % 1 - 0.5
    dv = (v / period + phase[1]) % 1 - 0.5
    dist = np.hypot(du, dv) * period
    return np.clip(radius + 0.5 - dist, 0, 1).astype(np.float32)


def _upsampler(cells: int) -> np.ndarray:
    """(32, cells) bilinear interpolation matrix from a `cells`-point grid to 32 pixels."""
    pos = np.clip((np.arange(SIZE) + 0.5) * cells / SIZE - 0.5, 0, cells - 1)
    lo = np.minimum(np.floor(pos).astype(int), cells - 2)
    frac = pos - lo
    mat = np.zeros((SIZE, cells), np.float32)
    mat[np.arange(SIZE), lo] = 1 - frac
    mat[np.arange(SIZE), lo + 1] = frac
    return mat


_UPSAMPLERS = {c: _upsampler(c) for c in range(2, 17)}


def smooth_noise(rng: np.random.Generator, cells: int) -> np.ndarray:
    """Smooth random field from a `cells` x `cells` grid (2..16), rescaled to [0, 1]."""
    mat = _UPSAMPLERS[cells]
    field = mat @ rng.random((cells, cells), dtype=np.float32) @ mat.T
    low, high = field.min(), field.max()
    return (field - low) / max(high - low, 1e-6)


def blotches(rng: np.random.Generator, cells: int, sharpness: float = 4.0) -> np.ndarray:
    """Blotchy two-level pattern: thresholded smooth noise with soft edges."""
    return np.clip(0.5 + sharpness * (smooth_noise(rng, cells) - 0.5), 0, 1)


def gradient(angle: float) -> np.ndarray:
    """Linear ramp from 0 to 1 across the image, constant along lines at `angle` (like stripes)."""
    _, v = rotated_coords(angle)
    return np.clip(v / SIZE + 0.5, 0, 1)


def colourise(pattern: np.ndarray, c0: np.ndarray, c1: np.ndarray) -> np.ndarray:
    """Image float32 (3, 32, 32): `c0` where pattern is 0, `c1` where it is 1."""
    return c0[:, None, None] + pattern * (c1 - c0)[:, None, None]


# ---- shapes --------------------------------------------------------------------------------


def _box(u: np.ndarray, v: np.ndarray, half_u: float, half_v: float) -> np.ndarray:
    return np.maximum(np.abs(u) - half_u, np.abs(v) - half_v)


def _signed_distance(shape: str, u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    """Signed distance (approximate outside corners) of `shape` of radius `r` at the origin."""
    if shape == "circle":
        return np.hypot(u, v) - r
    if shape == "ring":
        return np.abs(np.hypot(u, v) - 0.7 * r) - 0.3 * r
    if shape == "square":
        return _box(u, v, 0.8 * r, 0.8 * r)
    if shape == "bar":
        return _box(u, v, r, 0.3 * r)
    if shape == "cross":
        return np.minimum(_box(u, v, r, 0.3 * r), _box(u, v, 0.3 * r, r))
    if shape == "triangle":
        sides = [
            np.cos(a) * u + np.sin(a) * v for a in (np.pi / 2, np.pi / 2 + 2 * np.pi / 3, np.pi / 2 + 4 * np.pi / 3)
        ]
        return np.maximum(np.maximum(sides[0], sides[1]), sides[2]) - 0.5 * r
    raise ValueError(f"unknown shape {shape!r}")


def shape_mask(shape: str, cx: float, cy: float, radius: float, angle: float = 0.0) -> np.ndarray:
    """Anti-aliased coverage float32 (32, 32) in [0, 1] of a shape centred at (cx, cy)."""
    c, s = float(np.cos(angle)), float(np.sin(angle))
    x, y = _XX - float(cx), _YY - float(cy)
    dist = _signed_distance(shape, x * c + y * s, -x * s + y * c, float(radius))
    return np.clip(0.5 - dist, 0, 1)


def paste(image: np.ndarray, mask: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """`image` with `colour` painted where `mask` covers it."""
    return image + mask * (colour[:, None, None] - image)


def place_centres(
    rng: np.random.Generator, radii: np.ndarray, spacing: float = 0.9, margin: float = 1.0, tries: int = 64
) -> np.ndarray:
    """Centres (k, 2) at least `margin` * r_i from the border, pairs `spacing` * (r_i + r_j) apart.

    Each centre takes the first of `tries` candidates that fits under a spacing relaxed linearly
    to 0 over the candidates, so k centres are always returned.
    """
    radii = [float(r) for r in radii]
    units = rng.random((len(radii), tries, 2)).tolist()
    centres: list[tuple[float, float]] = []
    for r, candidates in zip(radii, units):
        low, span = margin * r, SIZE - 2 * margin * r
        for attempt, (u, v) in enumerate(candidates):
            x, y = low + u * span, low + v * span
            factor = spacing * (1 - attempt / (tries - 1))
            if all(math.hypot(x - cx, y - cy) >= factor * (r + cr) for (cx, cy), cr in zip(centres, radii)):
                break
        centres.append((x, y))
    return np.array(centres, np.float32).reshape(-1, 2)


# ---- finishing -----------------------------------------------------------------------------


def add_noise(rng: np.random.Generator, image: np.ndarray, sigma: float) -> np.ndarray:
    """`image` plus Gaussian pixel noise of standard deviation `sigma`.

    The noise is a window at a random offset into a fixed bank of normal samples: ~20x cheaper than
    drawing fresh samples, which matters when rendering 1e5 images.
    """
    start = int(rng.integers(_NOISE_BANK.size - image.size))
    return image + float(sigma) * _NOISE_BANK[start : start + image.size].reshape(image.shape)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Channel-first float image rounded and clipped to uint8 (32, 32, 3)."""
    return np.ascontiguousarray(np.clip(np.rint(image), 0, 255).astype(np.uint8).transpose(1, 2, 0))


# ---- upstream pre-training task -------------------------------------------------------------


def _angle_bin(angle: float, period: float, bins: int = 4) -> int:
    """Bin of `angle` modulo `period`, bins centred on multiples of period / bins."""
    return int(np.floor(((angle % period) / period) * bins + 0.5)) % bins


def _background(rng: np.random.Generator, kind: str) -> tuple[np.ndarray, int, int]:
    """Background pattern in [0, 1] of `kind`, its orientation label and its period label."""
    angle = rng.uniform(0, np.pi)
    period_label = int(rng.integers(len(_BG_PERIODS)))
    period = rng.uniform(*_BG_PERIODS[period_label])
    phase = rng.uniform(0, 2 * np.pi)
    if kind == "plain":
        return np.zeros((SIZE, SIZE), np.float32), 0, 0
    if kind == "gradient":
        return gradient(angle + np.pi * rng.integers(2)), 1 + _angle_bin(angle, np.pi), 0
    if kind == "stripes":
        return stripes(angle, period, phase), 1 + _angle_bin(angle, np.pi), 1 + period_label
    if kind == "checker":
        return checkerboard(angle, period, tuple(rng.random(2))), 0, 1 + period_label
    if kind == "dots":
        pattern = dots(period, rng.uniform(0.2, 0.35) * period, angle, tuple(rng.random(2)))
        return pattern, 0, 1 + period_label
    return blotches(rng, int(rng.integers(3, 9))), 0, 0


def random_scene(rng: np.random.Generator) -> tuple[np.ndarray, dict[str, int]]:
    """One upstream scene: uint8 (32, 32, 3) and a label for every UPSTREAM_ATTRIBUTES entry.

    A one-hue patterned background, 0-4 small objects and one larger main object drawn on top,
    all in palette colours other than the background's; shape, colour, position, size and
    orientation labels describe the main object.
    """
    bg_kind = int(rng.integers(len(BACKGROUNDS)))
    bg_colour = int(rng.integers(len(PALETTE)))
    pattern, bg_orientation, bg_period = _background(rng, BACKGROUNDS[bg_kind])
    c0 = palette_colour(rng, bg_colour)
    image = colourise(pattern, c0, shade(c0, rng.uniform(0.25, 0.6)))

    count = int(rng.integers(1, 6))
    radii = np.concatenate([[rng.uniform(*_MAIN_RADIUS)], rng.uniform(*_SMALL_RADIUS, count - 1)])
    centres = place_centres(rng, radii, margin=0.7)
    for k in range(count - 1, -1, -1):  # main object (k = 0) last, on top
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        colour = (bg_colour + int(rng.integers(1, len(PALETTE)))) % len(PALETTE)
        angle = rng.uniform(0, 2 * np.pi)
        image = paste(image, shape_mask(shape, *centres[k], radii[k], angle), palette_colour(rng, colour))
    noise = int(rng.integers(len(_NOISE_SIGMAS)))
    image = add_noise(rng, image, _NOISE_SIGMAS[noise])

    period = _SYMMETRY[shape]
    labels = {
        "background": bg_kind,
        "bg_colour": bg_colour,
        "bg_orientation": bg_orientation,
        "bg_period": bg_period,
        "count": count - 1,
        "shape": SHAPES.index(shape),
        "colour": colour,
        "x_bin": min(int(centres[0, 0] * 4 / SIZE), 3),
        "y_bin": min(int(centres[0, 1] * 4 / SIZE), 3),
        "size": min(int(3 * (radii[0] - _MAIN_RADIUS[0]) / (_MAIN_RADIUS[1] - _MAIN_RADIUS[0])), 2),
        "orientation": 1 + _angle_bin(angle, period) if period else 0,
        "noise": noise,
    }
    return to_uint8(image), labels


def render_upstream(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` upstream scenes, uint8 (n, 32, 32, 3), and int64 labels (n, len(UPSTREAM_ATTRIBUTES)).

    Label columns follow UPSTREAM_ATTRIBUTES order. Deterministic in `seed`; the seed stream is
    tagged so it never coincides with the demo tasks' streams.
    """
    rng = np.random.default_rng(np.random.SeedSequence([_UPSTREAM_TAG, seed]))
    images = np.empty((n, SIZE, SIZE, 3), np.uint8)
    labels = np.empty((n, len(UPSTREAM_ATTRIBUTES)), np.int64)
    for i in range(n):
        images[i], scene_labels = random_scene(rng)
        labels[i] = [scene_labels[name] for name in UPSTREAM_ATTRIBUTES]
    return images, labels
