"""Writing TFDS trees for tests: tf.train.Example encoding, TFRecord framing, dataset_info.json, features.json.

The inverse of peftbench/data/tfrecord.py and tfds.py, kept out of the package. `write_vtab_tfds_tree` writes
every VTAB-1k dataset with the smallest TFDS split sizes its task_adaptation definitions fit (tasks/tfds),
a few distinct PNGs reused across records, and the features each task's label rule reads.
Import with `from tfds_writer import ...`.
"""

from __future__ import annotations

import io
import json
import re
import struct
from pathlib import Path

import numpy as np
from PIL import Image

from peftbench.data import tfds
from peftbench.data.tfds_labels import CLEVR_DISTANCE_EDGES, CLEVR_MIN_OBJECTS, KITTI_VEHICLE_EDGES
from peftbench.data.tfrecord import masked_crc
from peftbench.errors import PeftbenchError

GREY = ("dsprites", "smallnorb")  # one-channel images in the real data
VERSIONS = {"kitti": "3.1.0", "dmlab": "2.0.1"}  # the rest: the pattern's major version, .0.0


# ---- protobuf wire format and record framing --------------------------------------------------------


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int64s as ten-byte two's complement
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def encode_feature(values: list) -> bytes:
    """A tf.train.Feature: bytes_list (1), float_list (2, packed) or int64_list (3, packed), by value type."""
    if values and isinstance(values[0], bytes):
        return _field(1, b"".join(_field(1, v) for v in values))
    if values and isinstance(values[0], float):
        return _field(2, _field(1, struct.pack(f"<{len(values)}f", *values)))
    return _field(3, _field(1, b"".join(_varint(v) for v in values)))


def encode_example(features: dict[str, list]) -> bytes:
    """A serialised tf.train.Example of {key: list of bytes, floats or ints}."""
    entries = b"".join(_field(1, _field(1, key.encode()) + _field(2, encode_feature(v))) for key, v in features.items())
    return _field(1, entries)


def frame(data: bytes) -> bytes:
    """One TFRecord record: length, masked CRC of the length, data, masked CRC of the data."""
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked_crc(length)) + data + struct.pack("<I", masked_crc(data))


def write_records(path: Path, records: list[bytes]) -> list[int]:
    """Write a TFRecord file; the byte offset of each record."""
    offsets, position, chunks = [], 0, []
    for data in records:
        offsets.append(position)
        chunks.append(frame(data))
        position += len(chunks[-1])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(chunks))
    return offsets


def write_dataset(
    folder: Path, name: str, splits: dict[str, list[dict[str, list]]], shards: int | dict[str, int] = 1
) -> Path:
    """A TFDS version folder: `<name>-<split>.tfrecord-NNNNN-of-NNNNN` shards, dataset_info.json, features.json."""
    entries = []
    for split, examples in splits.items():
        count = shards if isinstance(shards, int) else shards.get(split, 1)
        bounds = np.linspace(0, len(examples), count + 1).astype(int)
        records = [encode_example(e) for e in examples]
        sizes = []
        for i in range(count):
            path = folder / f"{name}-{split}.tfrecord-{i:05d}-of-{count:05d}"
            write_records(path, records[bounds[i] : bounds[i + 1]])
            sizes.append(path.stat().st_size)
        lengths = [str(int(b - a)) for a, b in zip(bounds[:-1], bounds[1:])]
        entries.append({"name": split, "numBytes": str(sum(sizes)), "shardLengths": lengths})
    info = {"name": name, "version": folder.name, "fileFormat": "tfrecord", "splits": entries}
    (folder / tfds.INFO).write_text(json.dumps(info, indent=2))
    features = {"type": "tensorflow_datasets.core.features.features_dict.FeaturesDict", "content": {}}
    (folder / "features.json").write_text(json.dumps(features))
    return folder


# ---- VTAB-1k trees ------------------------------------------------------------------------------------


def png(rng: np.random.Generator, grey: bool = False, binary: bool = False, size: int = 8) -> bytes:
    """A small random PNG (RGB, greyscale, or a 0/1 mask like dSprites')."""
    shape = (size, size) if grey or binary else (size, size, 3)
    pixels = rng.integers(0, 2 if binary else 256, shape, dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _midpoint(edges: tuple[float, ...], label: int) -> float:
    return (edges[label] + edges[label + 1]) / 2


def label_features(task: tfds.TfdsTask, label: int) -> dict[str, list]:
    """Features from which `task`'s label rule gives `label`."""
    rule = task.label["rule"]
    if rule == "class_label":
        return {task.label["feature"]: [label]}
    if rule == "binned_class_label":  # the smallest original value in the bin
        return {task.label["feature"]: [-(-label * task.label["original_classes"] // task.num_classes)]}
    if rule == "clevr_count_all":
        return {task.label["feature"]: [0] * (label + CLEVR_MIN_OBJECTS)}
    if rule == "clevr_closest_object_distance":
        return {task.label["feature"]: [1.0, 2.0, _midpoint(CLEVR_DISTANCE_EDGES, label), 3.0, 4.0, 10.5]}
    if rule == "kitti_closest_vehicle_distance":
        if label == len(KITTI_VEHICLE_EDGES) - 1:  # no vehicle: a pedestrian only
            return {task.label["type_feature"]: [3], task.label["location_feature"]: [0.0, 0.0, 4.0]}
        depth = _midpoint(KITTI_VEHICLE_EDGES, label) if label else 4.0
        return {task.label["type_feature"]: [0, 3], task.label["location_feature"]: [1.0, 1.0, depth, 0.0, 0.0, 1.0]}
    raise ValueError(f"no example writer for label rule {rule}")


def _fits(tasks: list[tfds.TfdsTask], split: str, size: int) -> bool:
    """Whether every piece of `tasks` cutting `split` fits a split of `size` examples (the others unbounded)."""
    lengths = {name: (size if name == split else 10**9,) for name in split_names(tasks)}
    dataset = tfds.Dataset(Path("."), "probe", "0", {s: tfds.SplitFiles(s, (), n) for s, n in lengths.items()})
    try:
        for task in tasks:
            for expression in task.splits.values():
                tfds.resolve(expression, dataset, task.counts)
    except PeftbenchError:
        return False
    return True


def split_names(tasks: list[tfds.TfdsTask]) -> list[str]:
    """The TFDS splits the definitions of `tasks` read from."""
    pieces = [p for t in tasks for e in t.splits.values() for p in re.split(r"\+(?![^\[]*\])", e)]
    return list(dict.fromkeys(tfds._PIECE.match(p)["split"] for p in pieces))


def minimal_sizes(tasks: list[tfds.TfdsTask], test_size: int = 3) -> dict[str, int]:
    """The smallest size (at least test_size) of each TFDS split that every definition of `tasks` fits."""
    sizes = {}
    for split in split_names(tasks):
        size = test_size
        while not _fits(tasks, split, size):
            size += 1
        sizes[split] = size
    return sizes


def write_vtab_tfds_tree(root: Path, test_size: int = 3, shards: int = 2, seed: int = 0) -> Path:
    """Every VTAB-1k TFDS dataset under `root`, labels spread over each task's classes (tasks sharing a
    dataset, e.g. clevr_count and clevr_dist, share its examples, each carrying every task's features)."""
    rng = np.random.default_rng(seed)
    by_dataset: dict[str, list[tfds.TfdsTask]] = {}
    for task in tfds.suite_tasks().values():
        by_dataset.setdefault(task.dataset, []).append(task)
    for dataset, tasks in by_dataset.items():
        name = dataset.split("/")[0]
        kind = {"grey": name in GREY, "binary": name == "dsprites"}
        images = [png(rng, **kind) for _ in range(6)]
        version = VERSIONS.get(name, tasks[0].version.replace("*", "0"))
        splits = {}
        for split, count in minimal_sizes(tasks, test_size).items():
            examples = []
            for i in range(count):
                features: dict[str, list] = {"image": [images[i % len(images)]]}
                for task in tasks:
                    features.update(label_features(task, (i * 7 + len(split)) % task.num_classes))
                examples.append(features)
            splits[split] = examples
        write_dataset(root / dataset / version, name, splits, shards)
    return root
