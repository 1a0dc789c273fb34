"""Hugging Face dataset files (parquet, save_to_disk) as task folders, read with the datasets library."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from hf_writer import png, rows, write_parquet_task, write_saved_task

from peftbench.data import hf
from peftbench.data.images import decode_image
from peftbench.data.loading import data_format, load_split
from peftbench.data.recipes import get_recipe
from peftbench.errors import PeftbenchError
from peftbench.store import Store
from peftbench.suites import get_suite

VTAB = get_suite("vtab")


def vtab_splits(train=(0, 1, 2, 3), val=(4, 0), test=(1, 2, 3)) -> dict:
    return {"train800": rows(list(train)), "val200": rows(list(val)), "test": rows(list(test))}


@pytest.mark.parametrize("layout", ["sharded", "folders", "names"])
def test_parquet_files_are_assigned_to_splits_as_the_library_names_them(tmp_path, layout):
    folder = write_parquet_task(tmp_path / "dtd", vtab_splits(), layout)
    task = hf.find_task(folder, "vtab1k")
    assert task.kind == "parquet" and set(task.splits) == {"train800", "val200", "test"}
    images, labels = hf.read_split(task, "train800val200", 5, tmp_path / "hf")  # the union of its parts
    assert labels == [0, 1, 2, 3, 4, 0]
    assert str(images[5]).endswith("val200-00000-of-00001.parquet row 1" if layout == "sharded" else " row 1")
    pixels = decode_image(images[1], None)
    assert pixels.shape == (8, 8, 3) and np.array_equal(pixels, decode_image_bytes(png(1)))
    assert hf.read_split(task, "test", 5, tmp_path / "hf", images=False) == ([], [1, 2, 3])


def decode_image_bytes(data: bytes) -> np.ndarray:
    import io

    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_the_sharded_naming_gives_the_splits_the_library_itself_finds(tmp_path):
    import datasets

    folder = write_parquet_task(tmp_path / "dtd", vtab_splits(), "sharded")
    library = datasets.load_dataset(str(folder), cache_dir=str(tmp_path / "hfc"))
    assert set(library) == set(hf.find_task(folder, "vtab1k").splits)
    assert library["val200"]["label"] == hf.read_split(hf.find_task(folder, "vtab1k"), "val200", 5, tmp_path)[1]


def test_a_digit_before_a_split_name_does_not_delimit_it(tmp_path):
    folder = write_parquet_task(tmp_path / "t", {**vtab_splits(), "train800val200": rows([3] * 6)}, "names")
    task = hf.find_task(folder, "vtab1k")
    assert [p.name for p in task.splits["val200"]] == ["val200.parquet"]  # not train800val200.parquet too
    assert hf.read_split(task, "train800val200", 5, tmp_path)[1] == [3] * 6


def test_a_save_to_disk_folder_is_memory_mapped_and_named_by_arrow_file_and_row(tmp_path):
    folder = write_saved_task(tmp_path / "eurosat", vtab_splits())
    task = hf.find_task(folder, "vtab1k")
    assert task.kind == "arrow" and {p.name for p in task.files("test")} >= {"state.json", "dataset_info.json"}
    images, labels = hf.read_split(task, "val200", 5, tmp_path / "hf")
    assert labels == [4, 0]
    assert str(images[1]) == f"{folder}/val200/data-00000-of-00001.arrow row 1"
    assert np.array_equal(decode_image(images[1], None), decode_image_bytes(png(1)))


def test_fgvc_takes_validation_as_val_and_trainval_as_train_plus_val(tmp_path):
    splits = {"train": rows([0, 1]), "validation": rows([2]), "test": rows([1])}
    folder = write_parquet_task(tmp_path / "fgvc" / "CUB_200_2011", splits, "sharded")
    task = hf.find_task(folder, "fgvc")
    assert set(task.splits) == {"train", "val", "test"}
    assert hf.read_split(task, "trainval", 200, tmp_path)[1] == [0, 1, 2]
    fgvc = get_suite("fgvc")
    assert data_format(fgvc, tmp_path / "fgvc" if not fgvc.subdir else tmp_path, "auto") == "hf"


def test_auto_detects_hf_files_and_the_cache_key_follows_the_files(tmp_path):
    root = tmp_path / "vtab"
    write_parquet_task(root / "dtd", vtab_splits(), "sharded")
    assert data_format(VTAB, root) == "hf"
    task, recipe = VTAB.task("dtd"), get_recipe("vtab-resize")
    first = load_split(VTAB, task, "test", root, 32, recipe, tmp_path / "cache")
    assert first.built and first.labels.tolist() == [1, 2, 3] and tuple(first.images.shape) == (3, 3, 8, 8)  # native
    assert first.meta["source"]["layout"] == "hf" and first.meta["source"]["format"] == "parquet"
    assert not load_split(VTAB, task, "test", root, 32, recipe, tmp_path / "cache").built  # a hit
    write_parquet_task(root / "dtd", {"test": rows([4, 4, 4])}, "sharded")  # the file changes
    again = load_split(VTAB, task, "test", root, 32, recipe, tmp_path / "cache")
    assert again.built and again.labels.tolist() == [4, 4, 4]


def test_wrong_columns_are_one_line_naming_file_columns_and_expected(tmp_path):
    bad = {"pixels": [png(0)], "y": [0]}
    folder = write_parquet_task(tmp_path / "t", {**vtab_splits(), "test": bad}, "names")
    with pytest.raises(PeftbenchError) as caught:
        hf.read_split(hf.find_task(folder, "vtab1k"), "test", 5, tmp_path)
    assert str(caught.value) == (
        f"{folder}/test.parquet: columns pixels, y; expected an image column (image or img) "
        "and a label column (label or labels)"
    )


def test_img_and_labels_columns_are_accepted_and_float_labels_refused(tmp_path):
    folder = write_parquet_task(tmp_path / "t", {**vtab_splits(), "test": {"img": [png(0)], "labels": [2]}}, "names")
    assert hf.read_split(hf.find_task(folder, "vtab1k"), "test", 5, tmp_path)[1] == [2]
    write_parquet_task(folder, {"test": {"image": [png(0)], "label": [1.5]}}, "names")
    with pytest.raises(PeftbenchError, match=r"test.parquet: column 'label' holds .*float.*; expected integer labels"):
        hf.read_split(hf.find_task(folder, "vtab1k"), "test", 5, tmp_path)


@pytest.mark.parametrize("writer", ["parquet", "saved"])
def test_a_label_out_of_range_names_file_and_row(tmp_path, writer):
    splits = vtab_splits(test=(1, 2, 7))
    folder = (
        write_parquet_task(tmp_path / "t", splits) if writer == "parquet" else write_saved_task(tmp_path / "t", splits)
    )
    with pytest.raises(PeftbenchError) as caught:
        hf.read_split(hf.find_task(folder, "vtab1k"), "test", 5, tmp_path)
    file = "data/test-00000-of-00001.parquet" if writer == "parquet" else "test/data-00000-of-00001.arrow"
    assert str(caught.value) == f"{folder}/{file} row 2: label 7 outside 0..4 for this task"


def test_a_missing_split_and_a_missing_library_are_one_line_errors(tmp_path, monkeypatch):
    folder = write_parquet_task(tmp_path / "t", {"train800": rows([0]), "test": rows([0])}, "sharded")
    with pytest.raises(PeftbenchError, match=r"no parquet data for split 'val200' \(splits found: train800, test\)"):
        hf.find_task(folder, "vtab1k")
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(PeftbenchError, match=r'needs the datasets library: pip install "peftbench\[hf\]"'):
        hf.read_split(hf.HfTask(folder, "parquet", {"test": ()}), "test", 5, tmp_path)


def test_reading_stays_offline_and_out_of_the_home_cache(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "home")  # the library's default
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    folder = write_parquet_task(tmp_path / "t", vtab_splits(), "sharded")
    seen = []
    real = datasets.load_dataset
    monkeypatch.setattr(
        datasets, "load_dataset", lambda *a, **k: seen.append(datasets.config.HF_HUB_OFFLINE) or real(*a, **k)
    )
    hf.read_split(hf.find_task(folder, "vtab1k"), "test", 5, tmp_path / "hf")
    assert seen == [True] and not datasets.config.HF_HUB_OFFLINE and "HF_HUB_OFFLINE" not in os.environ
    assert not (tmp_path / "home").exists() and (tmp_path / "hf").is_dir()


@pytest.fixture(scope="module")
def vtab_hf_tree(tmp_path_factory):
    from hf_writer import write_vtab_hf_tree

    return write_vtab_hf_tree(tmp_path_factory.mktemp("hf") / "vtab")


def test_a_19_task_tree_passes_data_check_and_runs(vtab_hf_tree, tmp_path):
    from typer.testing import CliRunner

    from peftbench.cli import app

    check = CliRunner().invoke(app, ["data", "check", "--suite", "vtab", "--data-root", str(vtab_hf_tree), "--deep"])
    assert check.exit_code == 0, check.output
    assert "19 task(s) ready" in check.output
    warnings = [line for line in check.output.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 19 and all(
        " test (" in w and "holds 3 examples" in w for w in warnings
    )  # only test is small
    args = ["run", "--method", "linear", "--suite", "vtab", "--data-root", str(vtab_hf_tree), "--epochs", "1"]
    args += ["--model", "vit_micro_patch4_32", "--no-pretrained", "--out", str(tmp_path / "out")]
    args += ["--cache-dir", str(tmp_path / "cache"), "--device", "cpu"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    records = list(Store(tmp_path / "out").records())
    assert len(records) == 19 and {r.status for r in records} == {"ok"}, result.output
    assert {s["layout"] for r in records for s in r.data.fingerprints.values()} == {"hf"}
    assert {r.spec.data_layout for r in records} == {"hf"}  # auto-detected, and part of every key


def test_data_check_reports_sizes_and_a_bad_label_of_one_task(tmp_path):
    from peftbench.data.check import check_hf_task

    root = tmp_path / "vtab"
    write_parquet_task(root / "dtd", vtab_splits(test=(1, 99)), "sharded")
    report = check_hf_task(VTAB, VTAB.task("dtd"), root, deep=False)
    assert report.sizes == {"train800": 4, "val200": 2, "train800val200": 6}
    assert report.status == "error" and report.images_checked is None
    assert report.errors == [f"{root}/dtd/data/test-00000-of-00001.parquet row 1: label 99 outside 0..46 for this task"]
    assert (
        report.warnings[0]
        == f"{root}/dtd: train800 (data/train800-00000-of-00001.parquet) holds 4 examples, expected 800 for dtd"
    )
