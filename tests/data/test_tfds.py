"""The TFDS layout of VTAB-1k: TFRecord framing and Example decoding, split slicing, label rules."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
from tfds_writer import _field, _varint, encode_example, write_dataset, write_records

from peftbench.data import tfds, tfds_labels
from peftbench.data.images import decode_image
from peftbench.data.tfrecord import iter_records, parse_example, read_examples
from peftbench.errors import PeftbenchError
from peftbench.store import Store
from peftbench.suites import get_suite

TASKS = tfds.suite_tasks()


def indexed(n: int) -> list[dict]:
    return [{"index": [i], "image": [b"img%d" % i], "score": [i / 4, -1.5]} for i in range(n)]


def indices(dataset: tfds.Dataset, expression: str, counts: dict | None = None) -> list[int]:
    pieces = tfds.resolve(expression, dataset, counts)
    return [example["index"][0] for _, _, example in tfds.iter_examples(dataset, pieces)]


def test_examples_round_trip_in_shard_order(tmp_path):
    folder = write_dataset(tmp_path / "toy" / "1.0.0", "toy", {"train": indexed(10), "test": indexed(2)}, shards=3)
    dataset = tfds.read_dataset(folder)
    assert dataset.splits["train"].lengths == (3, 3, 4) and len(dataset.splits["test"]) == 2
    assert [p.name for p in dataset.splits["train"].shards][2] == "toy-train.tfrecord-00002-of-00003"
    examples = [e for _, _, e in tfds.iter_examples(dataset, tfds.resolve("train", dataset))]
    assert [e["index"] for e in examples] == [[i] for i in range(10)]
    assert examples[5] == {"index": [5], "image": [b"img5"], "score": [1.25, -1.5]}


def test_example_decoder_reads_unpacked_lists_and_negative_int64s():
    ints = _field(3, _varint(1 << 3 | 0) + _varint(-7) + _varint(1 << 3 | 0) + _varint(42))  # unpacked int64_list
    floats = _field(2, _varint(1 << 3 | 5) + struct.pack("<f", 0.5))  # unpacked float_list
    data = _field(1, _field(1, _field(1, b"a") + _field(2, ints)) + _field(1, _field(1, b"b") + _field(2, floats)))
    assert parse_example(data) == {"a": [-7, 42], "b": [0.5]}
    assert parse_example(encode_example({"n": [-(1 << 40)]})) == {"n": [-(1 << 40)]}
    with pytest.raises(ValueError, match="not a tf.train.Example"):
        parse_example(b"\x0a\x05ab")


@pytest.mark.parametrize(
    ("where", "message"), [(2, "length CRC mismatch"), (14, "data CRC mismatch"), (-1, "data CRC mismatch")]
)
def test_a_corrupted_byte_names_file_and_record_offset(tmp_path, where, message):
    path = tmp_path / "x.tfrecord-00000-of-00001"
    offsets = write_records(path, [encode_example({"i": [i], "pad": [b"x" * 20]}) for i in range(3)])
    data = bytearray(path.read_bytes())
    record = 1 if where >= 0 else 2
    position = offsets[record] + where if where >= 0 else len(data) - 2
    data[position] ^= 0x40
    path.write_bytes(bytes(data))
    with pytest.raises(PeftbenchError) as caught:
        list(iter_records(path))
    text = str(caught.value)
    assert text == f"{path}: record at byte {offsets[record]}: {message} (file corrupted or not a TFRecord)"
    assert "\n" not in text


def test_a_truncated_file_and_a_short_shard_are_refused(tmp_path):
    path = tmp_path / "x.tfrecord-00000-of-00001"
    offsets = write_records(path, [encode_example({"i": [i]}) for i in range(3)])
    full = path.read_bytes()
    path.write_bytes(full[:-3])
    with pytest.raises(PeftbenchError, match=rf"record at byte {offsets[2]}: truncated: the header says"):
        list(iter_records(path))
    path.write_bytes(full[: offsets[2] + 5])
    with pytest.raises(PeftbenchError, match=rf"record at byte {offsets[2]}: truncated header \(5 of 12 bytes\)"):
        list(iter_records(path))
    path.write_bytes(full)
    with pytest.raises(PeftbenchError, match="holds 3 records; expected at least 5"):
        list(read_examples(path, skip=1, count=4))
    assert [e["i"] for _, e in read_examples(path, skip=1, count=2)] == [[1], [2]]


def test_vtab_val200_and_test_slices_follow_task_adaptation(tmp_path):
    write_dataset(tmp_path / "a" / "1.0.0", "a", {"train": indexed(2010), "test": indexed(5)}, shards=3)
    dataset = tfds.read_dataset(tmp_path / "a" / "1.0.0")
    cifar = TASKS["cifar"]  # val200 = train[(90 * 2010) // 100 : +200] = train[1809:2009]
    assert indices(dataset, cifar.splits["train800"], cifar.counts) == list(range(800))
    assert indices(dataset, cifar.splits["val200"], cifar.counts) == list(range(1809, 2009))
    assert indices(dataset, cifar.splits["train800val200"], cifar.counts) == [*range(800), *range(1809, 2009)]
    assert indices(dataset, "test[50%:]") == [2, 3, 4]  # TFDS rounds 2.5 to the closest: Python's round(2.5) == 2
    eurosat = TASKS["eurosat"]  # test = train[60n//100 + 20n//100:], not train[80%:]: 1206 + 402 = 1608 (80%: 1608)
    write_dataset(tmp_path / "b" / "1.0.0", "b", {"train": indexed(809)})
    small = tfds.read_dataset(tmp_path / "b" / "1.0.0")
    assert indices(small, eurosat.splits["test"], eurosat.counts) == list(range(485 + 161, 809))
    assert indices(small, "train[80%:]") == list(range(647, 809))


def test_a_tree_too_small_for_the_definition_is_an_error(tmp_path):
    write_dataset(tmp_path / "a" / "1.0.0", "a", {"train": indexed(900), "test": indexed(2)})
    dataset = tfds.read_dataset(tmp_path / "a" / "1.0.0")
    with pytest.raises(PeftbenchError, match=r"asks for examples 810\.\.1010 of split 'train', which holds 900"):
        tfds.resolve(TASKS["cifar"].splits["val200"], dataset, TASKS["cifar"].counts)
    with pytest.raises(PeftbenchError, match=r"no split 'validation' \(splits: train, test\)"):
        tfds.resolve("validation[:200]", dataset)


def test_dsprites_binning_into_16_classes():
    def binned(value: int, original: int) -> int:
        example = {"v": [value]}
        return tfds_labels.binned_class_label(example, "v", original_classes=original, num_classes=16)

    orientation = [binned(v, 40) for v in range(40)]  # factor 2.5, as tf.math.floordiv(v, 2.5)
    assert orientation == [math.floor(v / 2.5) for v in range(40)]
    assert orientation[:8] == [0, 0, 0, 1, 1, 2, 2, 2] and orientation[-5:] == [14, 14, 14, 15, 15]
    assert [binned(v, 32) for v in (0, 1, 2, 3, 30, 31)] == [0, 0, 1, 1, 15, 15]  # x position: factor 2
    with pytest.raises(tfds_labels.LabelError, match="expected 0..39"):
        binned(40, 40)


def test_kitti_closest_vehicle_distance_bins():
    assert tfds_labels.KITTI_VEHICLE_EDGES == (-100.0, 8.0, 20.0, 999.0)

    def label(types: list[int], depths: list[float]) -> int:
        locations = [c for z in depths for c in (1.0, 2.0, z)]
        return tfds_labels.kitti_closest_vehicle_distance({"objects/type": types, "objects/location": locations})

    assert label([0], [8.0]) == 0  # an edge falls in the lower bin (edges[i] < distance, strictly)
    assert label([1], [8.01]) == 1 and label([2], [20.0]) == 1 and label([0], [20.5]) == 2
    assert label([0, 2], [30.0, 7.0]) == 0  # the closest vehicle counts
    assert label([3, 5, 0], [2.0, 3.0, 25.0]) == 2  # pedestrians and cyclists are not vehicles
    assert label([3], [2.0]) == 3 and label([], []) == 3  # no vehicle: depth 1000
    assert label([0], [1500.0]) == 3
    with pytest.raises(tfds_labels.LabelError, match="holds 3 values for 2 objects"):
        tfds_labels.kitti_closest_vehicle_distance({"objects/type": [0, 1], "objects/location": [1.0, 2.0, 3.0]})


def test_clevr_count_and_closest_object_distance():
    assert tfds_labels.CLEVR_DISTANCE_EDGES == (0.0, 8.0, 8.5, 9.0, 9.5, 10.0, 100.0)
    assert [tfds_labels.clevr_count_all({"objects/size": [1] * n}) for n in (3, 4, 10)] == [0, 1, 7]

    def distance(*depths: float) -> int:
        coords = [c for z in depths for c in (50.0, 60.0, z)]
        return tfds_labels.clevr_closest_object_distance({"objects/pixel_coords": coords})

    assert [distance(z) for z in (7.9, 8.0, 8.2, 8.75, 9.25, 9.75, 10.0, 12.0)] == [0, 0, 1, 2, 3, 4, 4, 5]
    assert distance(12.0, 8.3, 11.0) == 1
    with pytest.raises(tfds_labels.LabelError, match="not above the lowest bin edge 0.0"):
        distance(0.0)
    with pytest.raises(tfds_labels.LabelError, match="feature 'objects/pixel_coords' missing"):
        tfds_labels.clevr_closest_object_distance({"objects/size": [1]})


def test_definitions_match_the_suite():
    suite = get_suite("vtab1k")
    assert list(TASKS) == [t.name for t in suite.tasks]
    for task in suite.tasks:
        definition = TASKS[task.name]
        assert definition.num_classes == task.num_classes, task.name
        assert set(definition.splits) == set(task.splits), task.name
        assert definition.label["rule"] in tfds_labels.RULES, task.name
    assert (
        TASKS["smallnorb_azi"].splits["val200"] == "test[:200]" and TASKS["clevr_dist"].splits["test"] == "validation"
    )


def test_newest_matching_version_is_read(tmp_path):
    for version in ("3.0.1", "3.0.10", "3.2.0", "4.0.0", "notes"):
        (tmp_path / "cifar100" / version).mkdir(parents=True)
    assert tfds.version_dir(tmp_path, "cifar100", "3.*.*").name == "3.2.0"
    assert tfds.version_dir(tmp_path, "cifar100", "3.0.1").name == "3.0.1"
    with pytest.raises(PeftbenchError, match=r"no version folder matching 2\.\*\.\* \(found: 3\.0\.1, 3\.0\.10"):
        tfds.version_dir(tmp_path, "cifar100", "2.*.*")
    with pytest.raises(PeftbenchError, match="missing TFDS dataset folder"):
        tfds.version_dir(tmp_path, "svhn_cropped", "3.*.*")


def test_a_task_split_decodes_images_and_labels(tmp_path):
    from tfds_writer import label_features, png

    rng = np.random.default_rng(0)
    task = TASKS["dsprites_ori"]
    mask = png(rng, binary=True)
    train = [{"image": [mask], **label_features(task, i % 16)} for i in range(1000)]
    write_dataset(tmp_path / "dsprites" / "2.0.0", "dsprites", {"train": train}, shards=2)
    split = tfds.read_task_split(task, tmp_path, "val200")
    assert split.labels == [i % 16 for i in range(800, 1000)]
    pixels = decode_image(split.images[0], None)
    assert pixels.shape == (8, 8, 3) and set(np.unique(pixels)) <= {0, 255}  # dSprites' 0/1 masks times 255
    assert str(split.images[0]).startswith(f"{tmp_path}/dsprites/2.0.0/dsprites-train.tfrecord-00001-of-00002: record")
    assert len(split.shards) == 2


@pytest.fixture(scope="module")
def vtab_tfds_tree(tmp_path_factory):
    from tfds_writer import write_vtab_tfds_tree

    return write_vtab_tfds_tree(tmp_path_factory.mktemp("tfds") / "vtab")


def test_data_check_reads_a_19_task_tfds_tree(vtab_tfds_tree):
    from typer.testing import CliRunner

    from peftbench.cli import app

    result = CliRunner().invoke(app, ["data", "check", "--suite", "vtab", "--data-root", str(vtab_tfds_tree), "--deep"])
    assert result.exit_code == 0, result.output
    assert "19 task(s) ready" in result.output
    from peftbench.data.check import check_suite

    reports = check_suite(get_suite("vtab"), vtab_tfds_tree, deep=False)
    sizes = {r.task.name: r.sizes for r in reports}
    # the generated test splits are small: a warning naming the split, nothing else
    assert all(r.status == "warn" and len(r.warnings) == 1 and ": test (" in r.warnings[0] for r in reports), [
        (r.task.name, r.warnings, r.errors) for r in reports
    ]
    assert sizes["cifar"] == {"train800": 800, "val200": 200, "train800val200": 1000, "test": 3}
    assert sizes["eurosat"]["test"] == 160 and sizes["smallnorb_azi"]["test"] == 100  # train[640:800], test[50%:]


def test_run_writes_one_record_per_task_from_a_tfds_tree(vtab_tfds_tree, tmp_path):
    from typer.testing import CliRunner

    from peftbench.cli import app

    args = ["run", "--method", "linear", "--suite", "vtab", "--data-root", str(vtab_tfds_tree), "--data-format", "tfds"]
    args += ["--model", "vit_micro_patch4_32", "--no-pretrained", "--epochs", "1", "--out", str(tmp_path / "out")]
    args += ["--cache-dir", str(tmp_path / "cache"), "--device", "cpu"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    records = list(Store(tmp_path / "out").records())
    assert len(records) == 19 and {r.status for r in records} == {"ok"}, result.output
    assert {r.spec.task for r in records} == set(TASKS)
    source = records[0].data.fingerprints
    assert {s["layout"] for s in source.values()} == {"tfds"}
    assert {r.spec.data_layout for r in records} == {"tfds"}  # in the key: never resumes a list-file run
