"""Decoding a split's images once, as its preprocessing recipe says, for the cache."""

from __future__ import annotations

import io
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Union

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import PeftbenchError
from .recipes import Recipe

FILTERS = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR}
# PIL's own decompression-bomb limit (89,478,485 pixels), applied by peftbench to every image, with
# the image's path in the error; PEFTBENCH_MAX_IMAGE_PIXELS raises or lowers it.
DEFAULT_MAX_PIXELS = 89_478_485
Image.MAX_IMAGE_PIXELS = None  # peftbench checks the size itself (below), before any pixel is decoded
SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")


@dataclass(frozen=True)
class EncodedImage:
    """An image stored inside another file (a TFRecord's record): `load()` returns its encoded bytes,
    `scale` multiplies its decoded 8-bit pixels (dSprites' 0/1 masks), `str()` says where it lives."""

    origin: str
    load: Callable[[], bytes]
    scale: int = 1

    def __str__(self) -> str:
        return self.origin

    def open(self) -> Image.Image:
        image = Image.open(io.BytesIO(self.load()))
        if self.scale == 1:
            return image
        if image.mode not in ("L", "RGB"):
            raise ValueError(f"pixel scaling needs 8-bit L or RGB pixels, got mode {image.mode}")
        scaled = np.asarray(image, dtype=np.uint16) * self.scale
        return Image.fromarray(np.minimum(scaled, 255).astype(np.uint8), mode=image.mode)


Source = Union[Path, EncodedImage]


def _open(source: Source) -> Image.Image:
    return source.open() if isinstance(source, EncodedImage) else Image.open(source)


def max_pixels() -> int:
    value = os.environ.get("PEFTBENCH_MAX_IMAGE_PIXELS", "")
    try:
        return int(value) if value else DEFAULT_MAX_PIXELS
    except ValueError:
        raise PeftbenchError(f"PEFTBENCH_MAX_IMAGE_PIXELS must be an integer, got {value!r}") from None


def _check_size(image: Image.Image, path: Path) -> None:
    width, height = image.size
    if width * height > max_pixels():
        raise PeftbenchError(
            f"image {path} has {width} x {height} = {width * height:,} pixels, more than the limit of "
            f"{max_pixels():,}; raise PEFTBENCH_MAX_IMAGE_PIXELS if it is meant to be this large"
        )


def _rgb(image: Image.Image, path: Path) -> Image.Image:
    """RGB, with 16-bit grey scaled to 8 bits (not clipped, as PIL's convert does); other wide modes refused."""
    if image.mode in SIXTEEN_BIT:
        grey = np.asarray(image, dtype=np.uint16).astype(np.uint32)
        return Image.fromarray(((grey * 255 + 32767) // 65535).astype(np.uint8), mode="L").convert("RGB")
    if image.mode in ("I", "F"):
        raise PeftbenchError(
            f"image {path} is in mode {image.mode} (32-bit {'integer' if image.mode == 'I' else 'float'} pixels), "
            "which has no agreed 8-bit scaling; convert it to 8-bit or 16-bit first"
        )
    return image.convert("RGB")


def decode_image(path: Path, size: tuple[int, int] | None, filter: str = "bicubic") -> np.ndarray:
    """One image as an RGB uint8 array (H, W, 3), resized to `size` (width, height) with PIL's `filter` if given."""
    try:
        with _open(path) as image:
            _check_size(image, path)
            image = _rgb(image, path)
            if size is not None and image.size != size:
                image = image.resize(size, FILTERS[filter])
            return np.asarray(image, dtype=np.uint8)
    except FileNotFoundError:
        raise PeftbenchError(f"missing image {path}") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise PeftbenchError(f"cannot decode image {path}: {exc}") from None


def _parallel(function: Callable[[Path], np.ndarray], paths: list[Path], workers: int = 4):
    """`function` over `paths` in threads (PIL releases the GIL): one array if shapes agree, else a list."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        arrays = list(pool.map(function, paths, chunksize=64))
    return np.stack(arrays) if len({a.shape for a in arrays}) == 1 else arrays


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file's header, without decoding the pixels."""
    try:
        with _open(path) as image:
            _check_size(image, path)
            return image.size
    except FileNotFoundError:
        raise PeftbenchError(f"missing image {path}") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise PeftbenchError(f"cannot decode image {path}: {exc}") from None


def shorter_side_size(width: int, height: int, shorter: int) -> tuple[int, int]:
    """torchvision's Resize(int): the shorter side to `shorter`, the longer one scaled and truncated."""
    if width <= height:
        return shorter, int(shorter * height / width)
    return int(shorter * width / height), shorter


def decode_for_recipe(paths: list[Path], recipe: Recipe, input_size: int) -> np.ndarray | list[np.ndarray]:
    """A split decoded once for the cache, CHW uint8: natively when its images share one size no
    larger than the input (the device resizes them with the PIL-exact bicubic), else resized by PIL as the recipe says."""
    target = recipe.resize_to(input_size)
    if recipe.resize == "shorter":
        arrays = _parallel(lambda p: decode_image(p, shorter_side_size(*image_size(p), target), recipe.filter), paths)
        return [a.transpose(2, 0, 1) for a in arrays] if isinstance(arrays, list) else arrays.transpose(0, 3, 1, 2)
    sizes = {image_size(p) for p in paths}
    native = recipe.filter == "bicubic" and not recipe.crop and len(sizes) == 1 and max(next(iter(sizes))) <= input_size
    width, height = next(iter(sizes)) if native else (target, target)
    return _decode_into(paths, None if native else (target, target), recipe.filter, (height, width))


def _decode_into(paths: list, size: tuple[int, int] | None, filter: str, shape: tuple[int, int]) -> np.ndarray:
    """Every image decoded (in threads: PIL releases the GIL) straight into one (N, 3, H, W) array, so
    the split's pixels are held once while the cache is built (not as a list, a stack and a transposed
    copy: 2.3x the split at VTAB-1k's size, BENCHMARKS.md)."""
    out = np.empty((len(paths), 3, *shape), dtype=np.uint8)

    def fill(i: int) -> None:
        array = decode_image(paths[i], size, filter)
        if array.shape[:2] != shape:  # a header that disagrees with the pixels
            raise PeftbenchError(f"image {paths[i]} decodes to {array.shape[1]} x {array.shape[0]} pixels, "
                                 f"expected {shape[1]} x {shape[0]}")  # fmt: skip
        out[i] = array.transpose(2, 0, 1)

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(fill, range(len(paths)), chunksize=64))
    return out
