"""The FGVC JSON reader, path safety in both layouts, and `data check` on miniature trees of every task."""

import json
import re
import shutil
from pathlib import Path

import pytest
from rich.console import Console
from trees import FGVC, FGVC_IDS, FGVC_SIZES, VTAB, VTAB_SIZES, fitted_suite, write_fgvc_tree, write_vtab_tree

from peftbench.data import fgvc
from peftbench.data.check import MAX_NAMED_IMAGES, check_suite, render_table
from peftbench.data.vtab import read_list
from peftbench.errors import PeftbenchError

FIT_VTAB = fitted_suite(VTAB, VTAB_SIZES)
FIT_FGVC = fitted_suite(FGVC, FGVC_SIZES, num_classes=len(FGVC_IDS))


@pytest.fixture
def fgvc_root(tmp_path: Path) -> Path:
    return write_fgvc_tree(tmp_path / "fgvc")


@pytest.fixture
def vtab_tree(tmp_path: Path) -> Path:
    return write_vtab_tree(tmp_path / "vtab-1k")


def raises(message: str):
    """pytest.raises for a PeftbenchError whose text contains `message` literally."""
    return pytest.raises(PeftbenchError, match=re.escape(message))


def by_task(reports) -> dict:
    return {r.task.name: r for r in reports}


# --- the FGVC reader ------------------------------------------------------------------------------


def test_labels_are_remapped_through_the_union_of_all_splits(fgvc_root: Path):
    task_dir = fgvc_root / "CUB_200_2011"
    raw = json.loads((task_dir / "train.json").read_text())
    assert FGVC_IDS[1] not in raw.values()  # train lacks id 5: a per-split remapping would shift 17 and 40
    images, labels = fgvc.read_split(task_dir, "images", "train", 200)
    index = {cid: label for label, cid in enumerate(FGVC_IDS)}
    assert labels == [index[cid] for cid in raw.values()] == [0, 2, 3, 0, 2, 3]
    assert images == [task_dir / "images" / key for key in raw] and all(p.is_file() for p in images)
    assert fgvc.read_split(task_dir, "images", "val", 200)[1] == [0, 1, 2, 3]
    assert fgvc.class_ids(task_dir) == list(FGVC_IDS)  # fewer than 200 classes: allowed, data check warns


@pytest.mark.parametrize("task, image_dir", [("OxfordFlowers", ""), ("StanfordDogs", "Images"), ("NABirds", "images")])
def test_image_paths_are_relative_to_the_task_image_folder(fgvc_root: Path, task: str, image_dir: str):
    images, _ = fgvc.read_split(fgvc_root / task, image_dir, "test", 4)
    assert len(images) == FGVC_SIZES["test"] and all(p.is_file() for p in images)
    assert all(p.parent.parent == fgvc_root / task / image_dir for p in images)


def test_trainval_is_train_then_val_without_trainval_json(fgvc_root: Path):
    task_dir = fgvc_root / "OxfordFlowers"
    assert fgvc.split_files(task_dir, "trainval") == [task_dir / "train.json", task_dir / "val.json"]
    train, val = (fgvc.read_split(task_dir, "", s, 102) for s in ("train", "val"))
    assert fgvc.read_split(task_dir, "", "trainval", 102) == (train[0] + val[0], train[1] + val[1])


def test_trainval_json_is_used_when_present(fgvc_root: Path):
    task_dir = fgvc_root / "StanfordDogs"
    assert fgvc.split_files(task_dir, "trainval") == [task_dir / "trainval.json"]
    (task_dir / "trainval.json").write_text(json.dumps({"n00000017-Breed_17/train_0001.jpg": 17}))
    images, labels = fgvc.read_split(task_dir, "Images", "trainval", 120)
    assert images == [task_dir / "Images/n00000017-Breed_17/train_0001.jpg"] and labels == [2]
    assert images[0].is_file()


def test_unknown_split_lists_the_valid_ones(fgvc_root: Path):
    with raises("unknown FGVC split 'train800'; valid splits: train, val, trainval, test"):
        fgvc.read_split(fgvc_root / "NABirds", "images", "train800", 555)


def test_missing_json_names_the_expected_path_and_layout(fgvc_root: Path):
    task_dir = fgvc_root / "StanfordCars"
    (task_dir / "test.json").unlink()
    with raises(f"missing FGVC split file {task_dir / 'test.json'}; expected the FGVC layout <data-root>/<Task>/"):
        fgvc.read_split(task_dir, "", "train", 196)  # every split needs every file: the ids are their union


@pytest.mark.parametrize(
    "content, message",
    [
        (b'{"a.jpg": 1,\n "b.jpg" 2}', "train.json:2:10: invalid JSON (Expecting ':' delimiter)"),
        (b"", "train.json:1:1: invalid JSON (Expecting value)"),
        (b'{"a.jpg": 1}\xff', "train.json: byte 12: not UTF-8 text"),
        (
            b'["a.jpg", 1]',
            'train.json: expected a JSON object {"<image path>": <integer class id>, ...}, got a JSON list',
        ),
        (b'{"a.jpg": 1, "b.jpg": "3"}', "train.json: key 'b.jpg': expected an integer class id, got \"3\""),
        (b'{"a.jpg": 2.5}', "train.json: key 'a.jpg': expected an integer class id, got 2.5"),
        (b'{"a.jpg": true}', "train.json: key 'a.jpg': expected an integer class id, got true"),
        (b'{"a.jpg": null}', "train.json: key 'a.jpg': expected an integer class id, got null"),
        (b"{}", "train.json: split file has no entries"),
    ],
)
def test_bad_json_names_the_file_and_what_was_expected(fgvc_root: Path, content: bytes, message: str):
    path = fgvc_root / "CUB_200_2011" / "train.json"
    path.write_bytes(content)
    with raises(f"{path.parent}/{message}"):
        fgvc.read_json(path)
    with raises(f"{path.parent}/{message}"):  # reading any split reads every file
        fgvc.read_split(path.parent, "images", "test", 200)


def test_more_class_ids_than_classes_is_an_error(fgvc_root: Path):
    task_dir = fgvc_root / "NABirds"
    with raises(
        f"{task_dir}: the split files hold 4 distinct class ids (1..40); expected at most the task's 3 classes"
    ):
        fgvc.read_split(task_dir, "images", "test", 3)
    assert fgvc.read_split(task_dir, "images", "test", 4)[1] == [0, 1, 2, 3, 0]


# --- path safety in both layouts ------------------------------------------------------------------

ESCAPING = ["../x.jpg", "/etc/passwd", "images/../../x.jpg", "..", "./../x.jpg"]


@pytest.mark.parametrize("relative", ESCAPING)
def test_vtab_refuses_paths_leaving_the_task_folder(tmp_path: Path, relative: str):
    list_file = tmp_path / "test.txt"
    list_file.write_text(f"images/ok.jpg 1\n{relative} 0\n")
    with raises(f"{list_file}:2: image path {relative!r} leaves the task folder {tmp_path}"):
        read_list(list_file, 10)


@pytest.mark.parametrize("relative", ESCAPING)
def test_fgvc_refuses_paths_leaving_the_image_folder(tmp_path: Path, relative: str):
    path = tmp_path / "val.json"
    path.write_text(json.dumps({"001.Bird/a.jpg": 1, relative: 2}))
    with raises(f"{path}: key {relative!r}: image path leaves the image folder"):
        fgvc.read_json(path)


def test_paths_that_stay_inside_are_accepted(tmp_path: Path):
    list_file = tmp_path / "test.txt"
    list_file.write_text("./images/a.jpg 1\nimages/sub/../b.jpg 0\nimages/..x.jpg 2\n")
    assert [p.name for p in read_list(list_file, 10)[0]] == ["a.jpg", "b.jpg", "..x.jpg"]
    path = tmp_path / "train.json"
    path.write_text(json.dumps({"a/../b.jpg": 3, "..c.jpg": 4}))
    assert fgvc.read_json(path) == {"a/../b.jpg": 3, "..c.jpg": 4}


# --- data check -----------------------------------------------------------------------------------


@pytest.mark.parametrize("deep", [False, True])
def test_complete_trees_of_every_task_are_ok(vtab_tree: Path, fgvc_root: Path, deep: bool):
    for suite, root in ((FIT_VTAB, vtab_tree), (FIT_FGVC, fgvc_root)):
        reports = check_suite(suite, root, deep=deep)
        assert [r.task.name for r in reports] == [t.name for t in suite.tasks]
        assert [(r.status, r.errors, r.warnings) for r in reports] == [("ok", [], [])] * len(suite.tasks)
        assert all(r.images_checked == (15 if deep else None) and r.bad_images == 0 for r in reports)
    vtab = by_task(check_suite(FIT_VTAB, vtab_tree, deep=False))
    assert vtab["sun397"].sizes == {"train800": 5, "val200": 4, "train800val200": 9, "test": 6}
    assert vtab["sun397"].label_range == (0, 396) and vtab["patch_camelyon"].classes == 2
    cub = by_task(check_suite(FIT_FGVC, fgvc_root, deep=False))["CUB_200_2011"]
    assert cub.sizes == {"train": 6, "val": 4, "trainval": 10, "test": 5} and cub.label_range == (1, 40)


def test_without_deep_no_image_is_touched(vtab_tree: Path, fgvc_root: Path):
    for folder in vtab_tree.glob("*/images"):
        shutil.rmtree(folder)
    assert {r.status for r in check_suite(FIT_VTAB, vtab_tree, deep=False)} == {"ok"}
    (fgvc_root / "StanfordCars" / "car_ims").rename(fgvc_root / "elsewhere")
    assert {r.status for r in check_suite(FIT_FGVC, fgvc_root, deep=False)} == {"ok"}


def test_the_published_sizes_only_warn(vtab_tree: Path, fgvc_root: Path):
    for suite, root in ((VTAB, vtab_tree), (FGVC, fgvc_root)):
        reports = check_suite(suite, root, deep=False)
        assert {(r.status, len(r.errors)) for r in reports} == {("warn", 0)}
    cifar = by_task(check_suite(VTAB, vtab_tree, deep=False))["cifar"]
    assert f"{vtab_tree / 'cifar' / 'test.txt'}: 6 entries, expected 10000 for cifar" in cifar.warnings
    dogs = by_task(check_suite(FGVC, fgvc_root, deep=False))["StanfordDogs"]
    dogs_dir = fgvc_root / "StanfordDogs"
    assert f"{dogs_dir / 'trainval.json'}: 10 entries, expected 12000 for StanfordDogs" in dogs.warnings
    assert dogs.warnings[0].startswith(
        f"{dogs_dir}: the split files hold 4 distinct class ids, fewer than the task's 120"
    )


def test_missing_task_folder_names_the_expected_path_and_aliases(vtab_tree: Path):
    shutil.rmtree(vtab_tree / "oxford_iiit_pet")
    (vtab_tree / "cifar").rename(vtab_tree / "cifar100")  # an alias is found
    reports = by_task(check_suite(FIT_VTAB, vtab_tree, deep=True))
    pets = reports.pop("oxford_iiit_pet")
    assert pets.status == "error" and pets.folder is None and pets.sizes == {}
    assert pets.errors == [
        f"missing task folder {vtab_tree / 'oxford_iiit_pet'} (or oxford_pet, pets); expected the vtab1k layout under {vtab_tree}"
    ]
    assert reports["cifar"].folder == vtab_tree / "cifar100"
    assert {r.status for r in reports.values()} == {"ok"}


def test_missing_list_file_and_json_are_errors_naming_the_path(vtab_tree: Path, fgvc_root: Path):
    (vtab_tree / "caltech101" / "val200.txt").unlink()
    caltech = by_task(check_suite(FIT_VTAB, vtab_tree, deep=False))["caltech101"]
    assert caltech.errors == [
        f"missing list file {vtab_tree / 'caltech101' / 'val200.txt'}; expected the VTAB-1k layout "
        "<data-root>/<task>/{train800,val200,train800val200,test}.txt with lines '<image path> <label>'"
    ]
    assert caltech.sizes == {"train800": 5, "train800val200": 9, "test": 6}
    (fgvc_root / "NABirds" / "test.json").unlink()
    (fgvc_root / "NABirds" / "val.json").write_text('{"x.jpg": 1')
    nabirds = by_task(check_suite(FIT_FGVC, fgvc_root, deep=False))["NABirds"]
    assert [e.split(";")[0].split(" (")[0] for e in nabirds.errors] == [
        f"{fgvc_root / 'NABirds' / 'val.json'}:1:12: invalid JSON",
        f"missing FGVC split file {fgvc_root / 'NABirds' / 'test.json'}",
    ]
    assert nabirds.sizes == {"train": 6}


def test_label_out_of_range_is_an_error_with_file_and_line(vtab_tree: Path):
    path = vtab_tree / "svhn" / "test.txt"
    lines = path.read_text().splitlines()
    lines[2] = lines[2].rsplit(maxsplit=1)[0] + " 10"
    path.write_text("\n".join(lines) + "\n")
    svhn = by_task(check_suite(FIT_VTAB, vtab_tree, deep=False))["svhn"]
    assert svhn.errors == [f"{path}:3: label 10 outside 0..9 for this task"] and "test" not in svhn.sizes


def test_too_many_fgvc_ids_is_an_error(fgvc_root: Path):
    reports = check_suite(fitted_suite(FGVC, FGVC_SIZES, num_classes=3), fgvc_root, deep=False)
    assert [r.errors for r in reports] == [
        [
            f"{fgvc_root / t.name}: the split files hold 4 distinct class ids (1..40); expected at most the task's 3 classes"
        ]
        for t in FGVC.tasks
    ]


def test_a_size_mismatch_is_only_a_warning(vtab_tree: Path):
    path = vtab_tree / "eurosat" / "train800.txt"
    path.write_text(path.read_text() + "images/train800/000000.jpg 3\n")
    eurosat = by_task(check_suite(FIT_VTAB, vtab_tree, deep=True))["eurosat"]
    assert eurosat.status == "warn" and eurosat.errors == []
    assert eurosat.warnings == [f"{path}: 6 entries, expected 5 for eurosat"]


def test_deep_names_missing_and_corrupt_images(vtab_tree: Path, fgvc_root: Path):
    missing = vtab_tree / "dmlab" / "images" / "test" / "000004.png"
    corrupt = vtab_tree / "dmlab" / "images" / "val200" / "000001.png"
    truncated = fgvc_root / "StanfordDogs" / "Images" / "n00000017-Breed_17" / "test_0002.png"
    missing.unlink()
    corrupt.write_bytes(b"not a png")
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    assert by_task(check_suite(FIT_VTAB, vtab_tree, deep=False))["dmlab"].status == "ok"
    dmlab = by_task(check_suite(FIT_VTAB, vtab_tree, deep=True))["dmlab"]
    assert dmlab.bad_images == 2 and dmlab.images_checked == 15
    assert dmlab.errors[0].startswith(f"cannot decode image {corrupt}: ")  # train800, val200, ..., test order
    assert dmlab.errors[1] == f"missing image {missing}"
    dogs = by_task(check_suite(FIT_FGVC, fgvc_root, deep=True))["StanfordDogs"]
    assert len(dogs.errors) == 1 and dogs.errors[0].startswith(f"cannot decode image {truncated}: ")


def test_deep_names_the_first_bad_images_and_counts_the_rest(vtab_tree: Path):
    shutil.rmtree(vtab_tree / "kitti" / "images" / "test")
    kitti = by_task(check_suite(FIT_VTAB, vtab_tree, deep=True))["kitti"]
    assert kitti.bad_images == 6 and len(kitti.errors) == MAX_NAMED_IMAGES + 1
    assert kitti.errors[0] == f"missing image {vtab_tree / 'kitti' / 'images' / 'test' / '000000.png'}"
    assert kitti.errors[-1] == f"{vtab_tree / 'kitti'}: 1 more missing or undecodable image(s) beyond those named"


def test_table_has_a_row_per_task_with_sizes_classes_and_status(vtab_tree: Path, fgvc_root: Path):
    shutil.rmtree(vtab_tree / "dtd")
    console = Console(width=200, record=True)
    console.print(render_table(check_suite(VTAB, vtab_tree, deep=False)))
    text = console.export_text()
    assert re.search(
        r"cifar\s+│ cifar\s+│ 5/800\s+│ 4/200\s+│ 9/1000\s+│ 6/10000\s+│ 11/100 \(0\.\.99\)\s+│ warn", text
    )
    assert re.search(r"dtd\s+│ missing\s+│ -/800\s+│ -/200\s+│ -/1000\s+│ -/1880\s+│ 0/47\s+│ error", text)
    assert "bad images" not in text
    console.print(render_table(check_suite(FIT_FGVC, fgvc_root, deep=True)))
    text = console.export_text()
    assert re.search(r"train\s+┃ val\s+┃ trainval\s+┃ test\s+┃ classes\s+┃ bad images\s+┃ status", text)
    assert re.search(r"NABirds\s+│ NABirds\s+│ 6/6\s+│ 4/4\s+│ -\s+│ 5/5\s+│ 4/4 \(1\.\.40\)\s+│ 0/15\s+│ ok", text)


def test_escaping_paths_are_errors_in_data_check(vtab_tree: Path, fgvc_root: Path):
    path = vtab_tree / "kitti" / "val200.txt"
    path.write_text(path.read_text() + "../dtd/images/test/000000.jpg 1\n")
    kitti = by_task(check_suite(FIT_VTAB, vtab_tree, deep=True))["kitti"]
    assert kitti.errors == [
        f"{path}:5: image path '../dtd/images/test/000000.jpg' leaves the task folder {path.parent}; expected a path relative to it"
    ]
    path = fgvc_root / "OxfordFlowers" / "test.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "/etc/hosts": 1}))
    flowers = by_task(check_suite(FIT_FGVC, fgvc_root, deep=True))["OxfordFlowers"]
    assert flowers.errors == [
        f"{path}: key '/etc/hosts': image path leaves the image folder; expected a path relative to it"
    ]
