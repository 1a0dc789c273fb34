"""Mini-batches on the device: cached uint8 images -> resized, cropped, flipped model inputs.

The cache holds each split once (natively sized, or pre-resized by PIL); what varies per epoch
or per model happens here, in uint8: a PIL-exact bicubic resize of natively stored images, then
the recipe's crop and flip. Randomness comes from torch's seeded default generators.
"""

from __future__ import annotations

from typing import Protocol, Sequence

import torch

from .recipes import Recipe
from .resize import center_crop, random_crop, random_hflip, resize_uint8


class Split(Protocol):
    """What the cache (or an in-memory split) offers: labels and batches of images by index."""

    labels: torch.Tensor

    def __len__(self) -> int: ...
    def batch(self, indices: torch.Tensor) -> torch.Tensor | Sequence[torch.Tensor]: ...


class BatchMaker:
    """`maker(indices)` -> uint8 (B, 3, S, S) on `device`, as the recipe prescribes.

    With `resident`, a fixed-shape split is moved to the device once (the training split);
    otherwise each batch is gathered on the host and copied (large test splits).
    """

    def __init__(
        self, split: Split, recipe: Recipe, input_size: int, device: torch.device, train: bool, resident: bool = False
    ):
        self.split, self.recipe, self.size, self.device, self.train = split, recipe, input_size, device, train
        images = getattr(split, "images", None)
        self.resident = images.to(device) if resident and isinstance(images, torch.Tensor) else None

    def __call__(self, indices: torch.Tensor) -> torch.Tensor:
        if self.resident is not None:
            images = self.resident[indices.to(self.device)]
        else:
            images = self._gather(indices.cpu())
        return self._finish(images)

    def _gather(self, indices: torch.Tensor) -> torch.Tensor:
        batch = self.split.batch(indices)
        if isinstance(batch, torch.Tensor):
            return batch.to(self.device, non_blocking=True)
        # images of their own shapes (aspect-preserving resize): crop each on the host first
        return torch.stack([self._crop(image.unsqueeze(0)).squeeze(0) for image in batch]).to(self.device)

    def _crop(self, images: torch.Tensor) -> torch.Tensor:
        return random_crop(images, self.size) if self.train else center_crop(images, self.size)

    def _finish(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-2:] != (self.size, self.size):
            # natively stored images are resized (VTAB-1k); pre-resized ones are cropped (FGVC)
            images = self._crop(images) if self.recipe.crop else resize_uint8(images, self.size, self.size)
        if self.train and self.recipe.hflip:
            images = random_hflip(images)
        return images
