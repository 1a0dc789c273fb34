"""The decode-once cache: a split's uint8 images and int64 labels on disk, memory-mapped on reuse.

An entry lives in `<cache dir>/splits/<sha256 of its key>/`. Its key holds what a lookup can get
cheaply (the list files' digest and the decoding recipe), so a hit never stats the images; the
full fingerprint of the source (every image's size) is taken when building and kept in the
metadata for the records.

Commit protocol: data files are written under unique `.tmp` names, fsynced and renamed to
unique final names; `meta.json`, holding each file's exact size and a sampled sha256, is written
last and atomically. A build killed before that leaves no metadata (a miss); a truncated or
overwritten file fails the size or sample check and the entry is rebuilt. Concurrent builders
never share a file name, and the last metadata written wins.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence, Union

import numpy as np
import torch

from ..atomic import write_json_atomic
from ..errors import PeftbenchError

CACHE_VERSION = 1
META = "meta.json"
_CHUNK = 1 << 16  # bytes per integrity sample
_SAMPLES = 16  # samples per file; smaller files are hashed whole
_STALE_SECONDS = 3600  # older unreferenced files are leftovers of killed or lost builds (a live build's
# files go unreferenced only while it writes them)

Images = Union[np.ndarray, Sequence[np.ndarray]]
Build = Callable[[], tuple[Images, np.ndarray]]


class _Invalid(Exception):
    """An entry on disk that must not be used: the message says why."""


@dataclass(frozen=True)
class CachedSplit:
    """A cached split: labels (N,) int64, the entry's metadata, and whether this call built it."""

    labels: torch.Tensor
    meta: dict[str, Any]
    built: bool

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class FixedSplit(CachedSplit):
    """Images of one shape: `images` is a memory-mapped uint8 tensor (N, C, H, W)."""

    images: torch.Tensor

    def image(self, i: int) -> torch.Tensor:
        return self.images[i]

    def batch(self, indices: Sequence[int] | torch.Tensor) -> torch.Tensor:
        return self.images[torch.as_tensor(indices, dtype=torch.int64)]


@dataclass(frozen=True)
class RaggedSplit(CachedSplit):
    """Images of their own shapes: a memory-mapped flat uint8 buffer and rows (offset, H, W)."""

    flat: torch.Tensor
    index: torch.Tensor
    channels: int

    def image(self, i: int) -> torch.Tensor:
        """Image i as a uint8 view (C, H, W) of the mapped buffer."""
        offset, height, width = (int(v) for v in self.index[i])
        return self.flat[offset : offset + self.channels * height * width].view(self.channels, height, width)

    def batch(self, indices: Sequence[int] | torch.Tensor) -> list[torch.Tensor]:
        return [self.image(int(i)) for i in indices]


def default_cache_dir() -> Path:
    """`$PEFTBENCH_CACHE`, else `$XDG_CACHE_HOME/peftbench`, else `~/.cache/peftbench`."""
    if os.environ.get("PEFTBENCH_CACHE"):
        return Path(os.environ["PEFTBENCH_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "peftbench"


def list_digest(list_files: Sequence[Path]) -> str:
    """sha256 of the list files' names and bytes: what a lookup hashes (no image is touched)."""
    digest = hashlib.sha256()
    for path in list_files:
        data = Path(path).read_bytes()
        digest.update(f"{Path(path).name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def split_key(list_files: Sequence[Path], recipe: dict[str, Any]) -> dict[str, Any]:
    """The key of a split's entry: the list files' digest and the recipe (size, resize mode...)."""
    return {"lists": list_digest(list_files), "recipe": recipe}


def fingerprint(list_files: Sequence[Path], image_paths: Sequence[Path]) -> dict[str, Any]:
    """The source as built: list files' digest, image count and total bytes (stats every image)."""
    try:
        total = sum(Path(path).stat().st_size for path in image_paths)
    except FileNotFoundError as exc:
        raise PeftbenchError(f"missing image {exc.filename}") from None
    lists = list_digest(list_files)
    summary = hashlib.sha256(f"{lists}\0{len(image_paths)}\0{total}".encode()).hexdigest()
    return {"sha256": summary, "lists": lists, "images": len(image_paths), "bytes": total}


def entry_dir(key: dict[str, Any], cache_dir: Path | None = None) -> Path:
    """The folder of `key`'s entry."""
    name = hashlib.sha256(_canonical(key).encode()).hexdigest()[:32]
    return Path(cache_dir or default_cache_dir()) / "splits" / name


def get_or_build(
    key: dict[str, Any],
    build: Build,
    cache_dir: Path | None = None,
    source: Callable[[], dict[str, Any]] | None = None,
) -> FixedSplit | RaggedSplit:
    """The entry of `key`, checked; when missing or invalid, `build()` decodes it and it is stored.

    `build` returns (images, labels): images as one uint8 array (N, C, H, W) (fixed storage) or
    a list of uint8 arrays (C, H_i, W_i) (ragged storage), labels as N integers. `source`, called
    only when building, describes the source for the metadata (e.g. `fingerprint(...)`).
    """
    key = json.loads(_canonical(key))
    folder = entry_dir(key, cache_dir)
    try:
        return _open(folder, _checked_meta(folder, key), built=False)
    except FileNotFoundError:
        pass
    except _Invalid as exc:
        warnings.warn(f"rebuilding cache entry {folder}: {exc}")
    images, labels = build()
    return _store(folder, key, images, labels, source() if source else None)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def canonical_sha256(value: Any) -> str:
    """sha256 of a JSON-able value in canonical form (sorted keys, no spaces)."""
    return hashlib.sha256(_canonical(value).encode()).hexdigest()


def sampled_sha256(path: Path, size: int) -> str:
    """A file's sampled sha256, as entries check their data files (the whole file when it is small)."""
    return _sampled_sha256(path, size)


def _checked_meta(folder: Path, key: dict[str, Any]) -> dict[str, Any]:
    """The entry's metadata once every data file matches it; FileNotFoundError when there is none."""
    try:
        meta = json.loads((folder / META).read_text())
    except json.JSONDecodeError as exc:
        raise _Invalid(f"unreadable {META}: {exc}") from None
    if not isinstance(meta, dict) or meta.get("version") != CACHE_VERSION or meta.get("key") != key:
        raise _Invalid("metadata of another version or key")
    try:
        expected = {name: (folder / f["file"], f["bytes"], f["sha256_sampled"]) for name, f in meta["files"].items()}
    except (KeyError, TypeError, AttributeError):
        raise _Invalid(f"malformed {META}") from None
    for name, (path, expected_size, checksum) in expected.items():
        size = path.stat().st_size if path.is_file() else None
        if size != expected_size:
            raise _Invalid(f"{name} file has {size} bytes, expected {expected_size}")
        if _sampled_sha256(path, size) != checksum:
            raise _Invalid(f"{name} file does not match its checksum")
    return meta


def _sampled_sha256(path: Path, size: int) -> str:
    """sha256 of the size and of evenly spaced chunks (the whole file when it is small)."""
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as handle:
        if size <= _SAMPLES * _CHUNK:
            digest.update(handle.read())
        else:
            for start in np.linspace(0, size - _CHUNK, _SAMPLES).astype(np.int64):
                handle.seek(int(start))
                digest.update(handle.read(_CHUNK))
    return digest.hexdigest()


def _parts(images: Images, labels: np.ndarray) -> tuple[dict[str, Any], dict[str, Any]]:
    """The storage kind and shapes for the metadata, and the arrays to write per file."""
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8 or images.ndim != 4 or len(images) != len(labels) or not len(labels):
            got = f"{images.dtype} {images.shape}"
            raise ValueError(f"expected uint8 images (N, C, H, W) for {len(labels)} labels, got {got}")
        return {"kind": "fixed", "shape": list(images.shape)}, {"labels": labels, "images": images}
    if len(images) != len(labels) or not len(labels):
        raise ValueError(f"expected {len(labels)} images, got {len(images)}")
    channels = images[0].shape[0]
    if any(a.dtype != np.uint8 or a.ndim != 3 or a.shape[0] != channels for a in images):
        raise ValueError(f"ragged images must all be uint8 ({channels}, H, W)")
    sizes = np.array([a.size for a in images], dtype=np.int64)
    index = np.column_stack([np.cumsum(sizes) - sizes, [a.shape[1:] for a in images]]).astype(np.int64)
    return {"kind": "ragged", "channels": channels}, {"labels": labels, "index": index, "images": images}


def _store(
    folder: Path, key: dict[str, Any], images: Images, labels: np.ndarray, source: dict[str, Any] | None
) -> FixedSplit | RaggedSplit:
    """Write the entry (data first, metadata last) and return it mapped from the new files."""
    layout, parts = _parts(images, labels)
    folder.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex[:12]
    files = {name: _write_file(folder, f"{name}-{token}.bin", part) for name, part in parts.items()}
    _fsync_dir(folder)
    meta = {
        "version": CACHE_VERSION,
        "key": key,
        **layout,
        "count": len(parts["labels"]),
        "files": files,
        "source": source,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    split = _open(folder, meta, built=True)  # mapped before the commit: a later cleanup cannot unmap it
    replaced = _previous_files(folder)
    write_json_atomic(folder / META, meta)
    _fsync_dir(folder)
    _remove_leftovers(folder, replaced, {spec["file"] for spec in files.values()})
    return split


def _write_file(folder: Path, name: str, arrays: np.ndarray | Sequence[np.ndarray]) -> dict[str, Any]:
    """Write arrays back to back to `name` (via a .tmp file, fsynced); its size and checksum."""
    temporary = folder / f"{name}.tmp"
    try:
        with open(temporary, "wb") as handle:
            for array in [arrays] if isinstance(arrays, np.ndarray) else arrays:
                handle.write(memoryview(np.ascontiguousarray(array)).cast("B"))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, folder / name)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    size = (folder / name).stat().st_size
    return {"file": name, "bytes": size, "sha256_sampled": _sampled_sha256(folder / name, size)}


def _open(folder: Path, meta: dict[str, Any], built: bool) -> FixedSplit | RaggedSplit:
    """Map the entry's files (copy-on-write: tensors are writable, the files never change)."""
    files = meta["files"]
    labels = torch.from_numpy(np.fromfile(folder / files["labels"]["file"], dtype=np.int64))
    if meta["kind"] == "fixed":
        images = np.memmap(folder / files["images"]["file"], dtype=np.uint8, mode="c", shape=tuple(meta["shape"]))
        return FixedSplit(labels, meta, built, torch.from_numpy(images))
    index = np.fromfile(folder / files["index"]["file"], dtype=np.int64).reshape(-1, 3)
    flat = np.memmap(folder / files["images"]["file"], dtype=np.uint8, mode="c")
    return RaggedSplit(labels, meta, built, torch.from_numpy(flat), torch.from_numpy(index), meta["channels"])


def _previous_files(folder: Path) -> set[str]:
    """The data files named by the metadata about to be replaced (none when unreadable)."""
    try:
        return {spec["file"] for spec in json.loads((folder / META).read_text())["files"].values()}
    except (OSError, ValueError, KeyError, AttributeError):
        return set()


def _remove_leftovers(folder: Path, replaced: set[str], kept: set[str]) -> None:
    """Delete the replaced entry's files and stale leftovers of killed or lost builds."""
    stale_before = time.time() - _STALE_SECONDS
    for path in folder.iterdir():
        if path.name == META or path.name in kept:
            continue
        try:
            if path.name in replaced or path.stat().st_mtime < stale_before:
                path.unlink()
        except OSError:  # gone already, or still mapped on a platform that forbids deleting it
            pass


def _fsync_dir(folder: Path) -> None:
    """Make renames in `folder` durable (a no-op where directories cannot be opened)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
