"""Pillow-exact bicubic resizing of uint8 image batches as two matmuls, on any torch device.

`resize_uint8` reproduces `PIL.Image.resize(size, Image.BICUBIC)` bit for bit: the coefficients
follow Pillow's `src/libImaging/Resample.c` (`precompute_coeffs`, `bicubic_filter` with a = -0.5,
`normalize_coeffs_8bpc`), and, like `ImagingResampleInner`, the two passes run one after the
other with the intermediate image rounded to uint8. Pillow 13 runs the vertical pass first when
the height shrinks by more than twice as many pixels as the width does (Pillow PR #9549; older
Pillow always runs the horizontal pass first); `resize_uint8` follows Pillow 13.

Exactness on every device and matmul precision mode (fp32, TF32, bf16 inputs): each fixed-point
coefficient is split into three balanced base-256 digits, so every matmul input is an integer of
at most 8 significant bits and every partial sum stays an integer below 2**24; the digit sums are
recombined in int64 and shifted like Pillow's `clip8`.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

PRECISION_BITS = 22  # Resample.c: 32 - 8 - 2
_SUPPORT = 2.0  # bicubic filter support before scaling
_MAX_TAPS = 514  # 255 * 128 * taps < 2**24 keeps every digit sum exact in float32


def _bicubic(x: np.ndarray) -> np.ndarray:
    """Pillow's `bicubic_filter` (a = -0.5), with its order of operations."""
    x = np.abs(x)
    near = ((1.5 * x - 2.5) * x) * x + 1.0
    far = (((x - 5.0) * x + 8.0) * x - 4.0) * -0.5
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


def bicubic_weights(in_size: int, out_size: int) -> torch.Tensor:
    """Pillow's normalised bicubic coefficients as a dense float64 matrix (out_size, in_size).

    As in Resample.c `precompute_coeffs`: scale = in/out, the support grows by the scale when
    downsampling, output pixel i is centred at (i + 0.5) * scale, its window is
    [int(center - support + 0.5), int(center + support + 0.5)) clipped to the image, and each
    row is divided by its (sequential) sum.
    """
    scale = in_size / out_size
    filter_scale = max(scale, 1.0)
    support = _SUPPORT * filter_scale
    center = (np.arange(out_size, dtype=np.float64) + 0.5) * scale
    first = np.maximum(np.floor(center - support + 0.5), 0.0)[:, None]
    end = np.minimum(np.floor(center + support + 0.5), in_size)[:, None]
    taps = np.arange(in_size, dtype=np.float64)[None, :]
    inside = (taps >= first) & (taps < end)
    weights = np.where(inside, _bicubic((taps - center[:, None] + 0.5) * (1.0 / filter_scale)), 0.0)
    total = np.cumsum(weights, axis=1)[:, -1:]  # left-to-right, like the C loop
    weights = np.where(total != 0.0, weights / np.where(total != 0.0, total, 1.0), weights)
    return torch.from_numpy(weights)


def fixed_point_weights(in_size: int, out_size: int) -> torch.Tensor:
    """The int64 coefficients Pillow uses for 8-bit images (`normalize_coeffs_8bpc`)."""
    scaled = bicubic_weights(in_size, out_size).numpy() * (1 << PRECISION_BITS)
    return torch.from_numpy(np.trunc(scaled + np.where(scaled < 0, -0.5, 0.5)).astype(np.int64))


@lru_cache(maxsize=64)
def _digits(in_size: int, out_size: int) -> torch.Tensor:
    """Fixed-point coefficients as float32 digits (3 * out_size, in_size): high, middle, low."""
    if 2 * int(np.ceil(_SUPPORT * max(in_size / out_size, 1.0))) + 1 > _MAX_TAPS:
        raise ValueError(f"downsampling {in_size} -> {out_size} px needs too wide a filter for exact float32 sums")
    rest = fixed_point_weights(in_size, out_size)
    digits = []
    for _ in range(3):
        low = (rest + 128) % 256 - 128  # balanced digit in [-128, 127]
        digits.append(low)
        rest = (rest - low) // 256
    return torch.cat(digits[::-1]).to(torch.float32)


def _recombine(high: torch.Tensor, middle: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
    """Pillow's `clip8` of the accumulator: round half up at PRECISION_BITS, clamp to uint8."""
    total = (high * 256 + middle).to(torch.int64) * 256 + low.to(torch.int64)  # high * 256 + middle < 2**24
    return ((total + (1 << (PRECISION_BITS - 1))) >> PRECISION_BITS).clamp_(0, 255).to(torch.uint8)


def _resample_width(images: torch.Tensor, width: int) -> torch.Tensor:
    """One pass along the last axis of a uint8 batch: a single (rows, W) @ (W, 3 * width) matmul."""
    digits = _digits(images.shape[-1], width).to(images.device)
    with torch.autocast(images.device.type, enabled=False):
        parts = images.to(torch.float32) @ digits.T
    return _recombine(*parts.unflatten(-1, (3, width)).unbind(-2))


def _resample_height(images: torch.Tensor, height: int) -> torch.Tensor:
    """One pass along the second-to-last axis, as a width pass of the transposed batch."""
    return _resample_width(images.transpose(-1, -2), height).transpose(-1, -2)


def resize_uint8(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bicubic resize of uint8 (..., C, H, W) to (..., C, height, width), equal to Pillow 13's.

    Two passes in Pillow's order, each rounded to uint8; an unchanged axis is skipped (Pillow's
    coefficients are the identity there). Peak memory is about 40 bytes per element of each
    pass's output, so resize large batches in chunks.
    """
    if images.dtype != torch.uint8:
        raise TypeError(f"resize_uint8 expects uint8 images, got {images.dtype}")
    passes = [(_resample_width, width, -1), (_resample_height, height, -2)]
    if vertical_first(images.shape[-2], images.shape[-1], height, width):
        passes.reverse()
    for resample, size, dim in passes:
        if size != images.shape[dim]:
            images = resample(images, size)
    return images.contiguous()


def vertical_first(in_height: int, in_width: int, height: int, width: int) -> bool:
    """Whether Pillow 13 resizes the height first: it shrinks, by over twice the width's shrink."""
    return in_height > height and in_height - height > 2 * (in_width - width)


def center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """The central size x size window of (..., H, W), offsets rounded as torchvision's CenterCrop."""
    height, width = images.shape[-2:]
    top, left = int(round((height - size) / 2.0)), int(round((width - size) / 2.0))
    return images[..., top : top + size, left : left + size]


def random_crop(images: torch.Tensor, size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A size x size window of each image of (N, C, H, W) at its own uniform random offset."""
    count, _, height, width = images.shape
    if size > height or size > width:
        raise ValueError(f"crop {size} is larger than the images ({height}x{width})")
    device = generator.device if generator is not None else images.device
    top = torch.randint(height - size + 1, (count,), generator=generator, device=device).to(images.device)
    left = torch.randint(width - size + 1, (count,), generator=generator, device=device).to(images.device)
    window = torch.arange(size, device=images.device)
    rows = (top[:, None] + window)[:, :, None]  # (N, size, 1)
    cols = (left[:, None] + window)[:, None, :]  # (N, 1, size)
    batch = torch.arange(count, device=images.device)[:, None, None]
    return images[batch, :, rows, cols].permute(0, 3, 1, 2)  # indexing puts C last


def random_hflip(images: torch.Tensor, generator: torch.Generator | None = None, p: float = 0.5) -> torch.Tensor:
    """(N, C, H, W) with each image mirrored left-right with probability p."""
    device = generator.device if generator is not None else images.device
    flip = (torch.rand(images.shape[0], generator=generator, device=device) < p).to(images.device)
    return torch.where(flip[:, None, None, None], images.flip(-1), images)
