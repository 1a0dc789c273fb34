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


class Staging:
    """Two host buffers, reused, that batches of a fixed-shape split are gathered into
    (`torch.index_select(..., out=)`), pinned on CUDA so that each copy to the device runs
    asynchronously; a buffer is refilled only once the copy from it has finished (its CUDA event).

    A fresh tensor per batch pays the page faults of a new allocation on every batch: at 224 px that
    gather runs several times slower (BENCHMARKS.md, scale rehearsal). A batch gathered here stays
    valid until the next-but-one gather."""

    def __init__(self, images: torch.Tensor, device: torch.device):
        self.images, self.pinned = images, device.type == "cuda"
        self.buffers: list[torch.Tensor] = []
        self.events: list = []
        self.turn = 0

    def gather(self, indices: torch.Tensor) -> torch.Tensor:
        if not self.buffers or len(self.buffers[0]) < len(indices):
            shape = (len(indices), *self.images.shape[1:])
            self.buffers = [torch.empty(shape, dtype=self.images.dtype, pin_memory=self.pinned) for _ in range(2)]
            self.events = [torch.cuda.Event() if self.pinned else None for _ in range(2)]
        if self.events[self.turn] is not None:
            self.events[self.turn].synchronize()  # the copy last made from this buffer is done
        batch = self.buffers[self.turn][: len(indices)]
        torch.index_select(self.images, 0, indices, out=batch)
        self.turn ^= 1
        return batch

    def copied(self) -> None:
        """Mark the copy from the buffer just gathered into as queued (CUDA: record its event)."""
        event = self.events[self.turn ^ 1]
        if event is not None:
            event.record()


class BatchMaker:
    """`maker(indices)` -> uint8 (B, 3, S, S) on `device`, as the recipe prescribes.

    With `resident`, a fixed-shape split is moved to the device once (the training split);
    otherwise each batch is gathered on the host and copied (large test splits), through reused
    (on CUDA pinned) buffers when `staged` (default: on CUDA, where the copy makes the batch
    independent of the buffer).
    """

    def __init__(
        self,
        split: Split,
        recipe: Recipe,
        input_size: int,
        device: torch.device,
        train: bool,
        resident: bool = False,
        staged: bool | None = None,
    ):
        self.split, self.recipe, self.size, self.device, self.train = split, recipe, input_size, device, train
        images = getattr(split, "images", None)
        fixed = isinstance(images, torch.Tensor)
        self.resident = images.to(device) if resident and fixed else None
        staged = device.type == "cuda" if staged is None else staged
        self.staging = Staging(images, device) if staged and fixed and self.resident is None else None

    def __call__(self, indices: torch.Tensor) -> torch.Tensor:
        if self.resident is not None:
            images = self.resident[indices.to(self.device)]
        else:
            images = self._gather(indices.cpu())
        return self._finish(images)

    def host_batch(self, indices: torch.Tensor) -> torch.Tensor:
        """The batch as the host assembles it, before the copy to the device: gathered from the cache
        (one shape), or each image cropped on the host and stacked (aspect-preserving resizes)."""
        if self.staging is not None:
            return self.staging.gather(indices)
        batch = self.split.batch(indices)
        if isinstance(batch, torch.Tensor):
            return batch
        return torch.stack([self._crop(image.unsqueeze(0)).squeeze(0) for image in batch])

    def _gather(self, indices: torch.Tensor) -> torch.Tensor:
        batch = self.host_batch(indices.cpu()).to(self.device, non_blocking=True)
        if self.staging is not None:
            self.staging.copied()
        return batch

    def _crop(self, images: torch.Tensor) -> torch.Tensor:
        return random_crop(images, self.size) if self.train else center_crop(images, self.size)

    def _finish(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-2:] != (self.size, self.size):
            # natively stored images are resized (VTAB-1k); pre-resized ones are cropped (FGVC)
            images = self._crop(images) if self.recipe.crop else resize_uint8(images, self.size, self.size)
        if self.train and self.recipe.hflip:
            images = random_hflip(images)
        return images
