"""Decoding images once into uint8 tensors at the model's input size."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..errors import PeftbenchError


def decode_image(path: Path, size: int) -> np.ndarray:
    """One image as an RGB uint8 array (size, size, 3), bicubic-resized when it differs."""
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            if image.size != (size, size):
                image = image.resize((size, size), Image.BICUBIC)
            return np.asarray(image, dtype=np.uint8)
    except FileNotFoundError:
        raise PeftbenchError(f"missing image {path}") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise PeftbenchError(f"cannot decode image {path}: {exc}") from None


def decode_images(paths: list[Path], size: int, workers: int = 4) -> torch.Tensor:
    """Images as one uint8 tensor (N, 3, size, size); PIL releases the GIL, so threads help."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        arrays = list(pool.map(lambda p: decode_image(p, size), paths, chunksize=64))
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
