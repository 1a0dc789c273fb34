"""Evaluation batches from the mapped cache to the device at 224 px, with and without `Staging`.

`python benchmarks/staging.py [--device cuda] [--images 8192]` writes a split of random uint8 images
(N, 3, 224, 224) to a file, maps it as the decode-once cache does, and times `BatchMaker` over it in
order, batches of 256, copy to the device included (synchronised at the end): a fresh tensor per batch
(before) against the reused buffers, pinned on CUDA, each refilled once its copy has finished (after).
It also checks that both give the same batches. On a CPU it times the host's gather alone.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from peftbench.data.batches import BatchMaker
from peftbench.data.cache import FixedSplit
from peftbench.data.recipes import get_recipe

SIZE, BATCH = 224, 256


def mapped_split(folder: Path, count: int) -> FixedSplit:
    path = folder / "images.bin"
    rng = np.random.default_rng(0)
    with open(path, "wb") as handle:
        for start in range(0, count, 512):
            handle.write(rng.integers(0, 256, (min(512, count - start), 3, SIZE, SIZE), dtype=np.uint8).tobytes())
    images = np.memmap(path, dtype=np.uint8, mode="c", shape=(count, 3, SIZE, SIZE))
    return FixedSplit(torch.zeros(count, dtype=torch.int64), {}, False, torch.from_numpy(images))


def rate(maker: BatchMaker, count: int, device: torch.device) -> float:
    started = time.perf_counter()
    for start in range(0, count, BATCH):
        indices = torch.arange(start, min(start + BATCH, count))
        maker(indices) if device.type == "cuda" else maker.host_batch(indices)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--images", type=int, default=8192)
    args = parser.parse_args()
    device, recipe = torch.device(args.device), get_recipe("vtab-resize")
    with tempfile.TemporaryDirectory() as folder:
        split = mapped_split(Path(folder), args.images)
        plain = BatchMaker(split, recipe, SIZE, device, train=False, staged=False)
        staged = BatchMaker(split, recipe, SIZE, device, train=False, staged=True)
        probe = torch.tensor([5, 0, args.images - 1, 7])
        for _ in range(3):  # several turns of the two buffers
            assert torch.equal(plain(probe).cpu(), staged(probe).cpu()), "staged batches differ from plain ones"
        rate(plain, args.images, device)  # warm the page cache and the allocator
        figures = {name: rate(maker, args.images, device) for name, maker in (("before", plain), ("after", staged))}
    what = "host gather + copy to the device" if device.type == "cuda" else "host gather"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"| {name} | {args.images:,} images of 224 px, batches of {BATCH} | {what} | "
          f"{figures['before']:,.0f} | {figures['after']:,.0f} | equal batches |")  # fmt: skip


if __name__ == "__main__":
    main()
