"""Pillow-exact resizing, batch crops, and the decode-once split cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import PIL
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from peftbench.data.cache import (
    FixedSplit,
    RaggedSplit,
    default_cache_dir,
    entry_dir,
    fingerprint,
    get_or_build,
    split_key,
)
from peftbench.data.resize import center_crop, random_crop, random_hflip, resize_uint8, vertical_first

PILLOW_13 = int(PIL.__version__.split(".")[0]) >= 13


def pillow_resize(images: np.ndarray, height: int, width: int) -> np.ndarray:
    """The reference: PIL's bicubic resize of each (C, H, W) image."""
    resized = [Image.fromarray(a.transpose(1, 2, 0)).resize((width, height), Image.BICUBIC) for a in images]
    return np.stack([np.asarray(image).transpose(2, 0, 1) for image in resized])


def edge_images(height: int, width: int) -> np.ndarray:
    """Hard black/white edges in each channel: where a float resize misses Pillow the most."""
    images = np.zeros((1, 3, height, width), dtype=np.uint8)
    images[0, 0, :, width // 2 :] = 255
    images[0, 1, height // 3 :, :] = 255
    images[0, 2, ::2, ::3] = 255
    return images


def max_difference(images: np.ndarray, height: int, width: int) -> int:
    ours = resize_uint8(torch.from_numpy(images), height, width).numpy()
    return int(np.abs(ours.astype(np.int64) - pillow_resize(images, height, width)).max())


SIZES = [
    ((32, 32), (224, 224)),  # upsampling
    ((300, 300), (224, 224)),  # downsampling
    ((375, 500), (256, 341)),  # aspect-preserving downsampling
    ((7, 7), (3, 3)),
    ((5, 9), (13, 4)),  # up in height, down in width
    pytest.param(  # height first in Pillow 13
        (400, 300), (224, 224), marks=pytest.mark.skipif(not PILLOW_13, reason="Pillow < 13 resizes width first")
    ),
]


@pytest.mark.parametrize(("source", "target"), SIZES)
def test_resize_equals_pillow(source: tuple[int, int], target: tuple[int, int]) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (2, 3, *source), dtype=np.uint8)
    assert max_difference(noise, *target) == 0
    assert max_difference(edge_images(*source), *target) == 0


def test_pillow_order_of_passes() -> None:
    assert vertical_first(400, 300, 224, 224)  # height shrinks 176 px, over twice the width's 76
    assert not vertical_first(300, 300, 224, 224)
    assert not vertical_first(32, 32, 224, 224)


def test_float_bicubic_misses_pillow_on_edges() -> None:
    images = edge_images(32, 32)
    floats = F.interpolate(torch.from_numpy(images).float(), size=(224, 224), mode="bicubic", align_corners=False)
    rounded = floats.round().clamp(0, 255).numpy().astype(np.int64)
    assert np.abs(rounded - pillow_resize(images, 224, 224)).max() > 1


def test_resize_keeps_leading_dims_and_rejects_floats() -> None:
    images = torch.randint(0, 256, (2, 3, 3, 8, 6), dtype=torch.uint8)
    assert resize_uint8(images, 5, 4).shape == (2, 3, 3, 5, 4)
    assert torch.equal(resize_uint8(images, 8, 6), images)
    with pytest.raises(TypeError):
        resize_uint8(images.float(), 5, 4)


def test_crops_and_flips() -> None:
    images = torch.arange(6 * 2 * 9 * 10, dtype=torch.int64).reshape(6, 2, 9, 10).to(torch.uint8)
    assert torch.equal(center_crop(images, 5), images[..., 2:7, 2:7])
    crops = random_crop(images, 5, torch.Generator().manual_seed(0))
    assert crops.shape == (6, 2, 5, 5)
    offsets = []
    for image, crop in zip(images, crops):
        top, left = (int(v) for v in torch.nonzero(image[0] == crop[0, 0, 0])[0])
        assert torch.equal(crop, image[:, top : top + 5, left : left + 5])
        offsets.append((top, left))
    assert len(set(offsets)) > 1
    assert torch.equal(random_crop(images, 5, torch.Generator().manual_seed(0)), crops)
    flipped = random_hflip(images, torch.Generator().manual_seed(1))
    mirrored = [torch.equal(f, i.flip(-1)) for f, i in zip(flipped, images)]
    assert all(m or torch.equal(f, i) for m, f, i in zip(mirrored, flipped, images))
    assert 0 < sum(mirrored) < len(images)


class Decoder:
    """A build callable that counts its calls: a second load must not decode."""

    def __init__(self, images: np.ndarray | list[np.ndarray], labels: list[int]):
        self.images, self.labels, self.calls = images, labels, 0

    def __call__(self) -> tuple[np.ndarray | list[np.ndarray], np.ndarray]:
        self.calls += 1
        return self.images, np.array(self.labels)


@pytest.fixture
def lists(tmp_path: Path) -> list[Path]:
    path = tmp_path / "data" / "train800.txt"
    path.parent.mkdir()
    path.write_text("images/a.jpg 0\nimages/b.jpg 1\nimages/c.jpg 1\n")
    return [path]


@pytest.fixture
def decoder() -> Decoder:
    return Decoder(np.random.default_rng(0).integers(0, 256, (3, 3, 8, 8), dtype=np.uint8), [0, 1, 1])


def data_file(split: FixedSplit | RaggedSplit, cache: Path) -> Path:
    return entry_dir(split.meta["key"], cache) / split.meta["files"]["images"]["file"]


def test_second_get_decodes_nothing(tmp_path: Path, lists: list[Path], decoder: Decoder) -> None:
    key = split_key(lists, {"size": 8})
    first = get_or_build(key, decoder, tmp_path / "cache", source=lambda: {"images": 3})
    second = get_or_build(key, decoder, tmp_path / "cache")
    assert (first.built, second.built, decoder.calls) == (True, False, 1)
    assert isinstance(second, FixedSplit)
    assert torch.equal(second.images, torch.from_numpy(decoder.images))
    assert second.labels.tolist() == [0, 1, 1] and second.labels.dtype == torch.int64
    assert second.meta["source"] == {"images": 3}


def test_changed_list_file_is_a_new_entry(tmp_path: Path, lists: list[Path], decoder: Decoder) -> None:
    first = get_or_build(split_key(lists, {"size": 8}), decoder, tmp_path)
    lists[0].write_text("images/a.jpg 0\nimages/b.jpg 1\nimages/c.jpg 0\n")
    decoder.labels = [0, 1, 0]
    second = get_or_build(split_key(lists, {"size": 8}), decoder, tmp_path)
    assert second.built and decoder.calls == 2 and second.labels.tolist() == [0, 1, 0]
    assert second.meta["key"] != first.meta["key"]


@pytest.mark.parametrize("damage", ["truncate", "overwrite"])
def test_damaged_data_file_is_rebuilt(tmp_path: Path, lists: list[Path], decoder: Decoder, damage: str) -> None:
    key = split_key(lists, {"size": 8})
    path = data_file(get_or_build(key, decoder, tmp_path), tmp_path)
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:100])
    else:
        path.write_bytes(bytes(255 - b for b in path.read_bytes()))
    with pytest.warns(UserWarning, match="rebuilding cache entry"):
        rebuilt = get_or_build(key, decoder, tmp_path)
    assert rebuilt.built and decoder.calls == 2
    assert torch.equal(rebuilt.images, torch.from_numpy(decoder.images))
    assert sorted(p.name for p in entry_dir(key, tmp_path).iterdir()) == sorted(
        ["meta.json", *(spec["file"] for spec in rebuilt.meta["files"].values())]
    )


def test_missing_metadata_means_rebuild(tmp_path: Path, lists: list[Path], decoder: Decoder) -> None:
    key = split_key(lists, {"size": 8})
    get_or_build(key, decoder, tmp_path)
    (entry_dir(key, tmp_path) / "meta.json").unlink()  # as if killed before the commit
    assert get_or_build(key, decoder, tmp_path).built and decoder.calls == 2


def test_ragged_round_trip(tmp_path: Path, lists: list[Path]) -> None:
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (3, h, w), dtype=np.uint8) for h, w in [(5, 7), (9, 4), (6, 6)]]
    decoder = Decoder(images, [1, 0, 1])
    key = split_key(lists, {"shorter_side": 6})
    get_or_build(key, decoder, tmp_path)
    split = get_or_build(key, decoder, tmp_path)
    assert isinstance(split, RaggedSplit) and not split.built and len(split) == 3
    for i, image in enumerate(images):
        assert torch.equal(split.image(i), torch.from_numpy(image))
    assert [tuple(t.shape) for t in split.batch([2, 0])] == [(3, 6, 6), (3, 5, 7)]


def test_fingerprint_and_default_dir(tmp_path: Path, lists: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    images = []
    for name, size in [("a.jpg", 10), ("b.jpg", 20)]:
        images.append(tmp_path / name)
        images[-1].write_bytes(b"x" * size)
    record = fingerprint(lists, images)
    assert (record["images"], record["bytes"]) == (2, 30)
    images[0].write_bytes(b"x" * 11)
    assert fingerprint(lists, images)["sha256"] != record["sha256"]
    monkeypatch.setenv("PEFTBENCH_CACHE", str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("PEFTBENCH_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "peftbench"


def test_interleaved_builders_do_not_corrupt(tmp_path: Path, lists: list[Path], decoder: Decoder) -> None:
    key = split_key(lists, {"size": 8})
    inner: list[FixedSplit | RaggedSplit] = []

    def racing_build() -> tuple[np.ndarray | list[np.ndarray], np.ndarray]:
        inner.append(get_or_build(key, decoder, tmp_path))  # another builder commits meanwhile
        return decoder()

    outer = get_or_build(key, racing_build, tmp_path)
    again = get_or_build(key, decoder, tmp_path)
    assert not again.built and again.meta["files"] == outer.meta["files"]  # the last writer won
    for split in (inner[0], outer, again):
        assert torch.equal(split.images, torch.from_numpy(decoder.images))
