"""The VTAB-1k list-file loader on trees in the real on-disk format."""

from pathlib import Path

import pytest
import torch
from conftest import write_vtab_task

from peftbench.data import load_split
from peftbench.data.recipes import RECIPES
from peftbench.data.vtab import read_list
from peftbench.errors import PeftbenchError
from peftbench.suites import get_suite

VTAB = get_suite("vtab")
RESIZE = RECIPES["vtab-resize"]


def test_reads_every_split_with_labels_and_pixels(vtab_root: Path):
    task = VTAB.task("cifar")
    train = load_split(VTAB, task, "train800val200", vtab_root, 32, RESIZE)
    test = load_split(VTAB, task, "test", vtab_root, 32, RESIZE)
    assert train.images.shape == (64, 3, 32, 32) and train.images.dtype == torch.uint8
    assert len(test) == 48
    assert train.labels.tolist() == [i % 2 for i in range(48)] + [i % 2 for i in range(16)]
    # class 0 is red-dominant, class 1 blue-dominant (JPEG keeps that)
    red, blue = train.images[0].float().mean((1, 2)), train.images[1].float().mean((1, 2))
    assert red[0] > red[2] + 100 and blue[2] > blue[0] + 100


def test_resizes_to_the_model_input_with_bicubic(tmp_path: Path):
    write_vtab_task(tmp_path, "dtd", image_size=48, suffix=".png")
    split = load_split(VTAB, VTAB.task("dtd"), "test", tmp_path, 32, RESIZE)
    assert split.images.shape[-2:] == (32, 32)


def test_accepts_a_folder_named_by_an_alias(tmp_path: Path):
    write_vtab_task(tmp_path, "cifar100")  # some releases name the folder cifar100
    split = load_split(VTAB, VTAB.task("cifar"), "val200", tmp_path, 32, RESIZE)
    assert len(split) == 16


def test_task_aliases_resolve_to_the_canonical_name():
    assert VTAB.task("oxford_pet").name == "oxford_iiit_pet"
    assert VTAB.task("cifar100").name == "cifar"


def test_paths_may_contain_spaces(tmp_path: Path):
    list_file = tmp_path / "test.txt"
    list_file.write_text("images/my photo.jpg 3\n\nimages/b.jpg 0\n")
    paths, labels = read_list(list_file, 10)
    assert [p.name for p in paths] == ["my photo.jpg", "b.jpg"] and labels == [3, 0]


@pytest.mark.parametrize(
    "line, message",
    [
        ("images/a.jpg", "test.txt:2: expected '<image path> <integer label>'"),
        ("images/a.jpg x7", "test.txt:2: expected '<image path> <integer label>'"),
        ("images/a.jpg 10", "test.txt:2: label 10 outside 0..9"),
        ("images/a.jpg -1", "test.txt:2: label -1 outside 0..9"),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path: Path, line: str, message: str):
    list_file = tmp_path / "test.txt"
    list_file.write_text(f"images/ok.jpg 1\n{line}\n")
    with pytest.raises(PeftbenchError, match=message.replace(".", r"\.").replace("(", r"\(")):
        read_list(list_file, 10)


def test_missing_list_file_names_the_expected_path(vtab_root: Path):
    (vtab_root / "cifar" / "test.txt").unlink()
    with pytest.raises(PeftbenchError, match=r"missing list file .*cifar/test\.txt; expected the VTAB-1k layout"):
        load_split(VTAB, VTAB.task("cifar"), "test", vtab_root, 32, RESIZE)


def test_missing_task_folder_names_folder_and_aliases(tmp_path: Path):
    with pytest.raises(PeftbenchError, match=r"missing task folder .*oxford_iiit_pet \(or oxford_pet, pets\)"):
        load_split(VTAB, VTAB.task("pets"), "test", tmp_path, 32, RESIZE)


def test_missing_and_undecodable_images_are_named(vtab_root: Path):
    task_dir = vtab_root / "cifar"
    (task_dir / "images/test/000003.jpg").unlink()
    with pytest.raises(PeftbenchError, match=r"missing image .*images/test/000003\.jpg"):
        load_split(VTAB, VTAB.task("cifar"), "test", vtab_root, 32, RESIZE)
    (task_dir / "images/val200/000002.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(PeftbenchError, match=r"cannot decode image .*images/val200/000002\.jpg"):
        load_split(VTAB, VTAB.task("cifar"), "val200", vtab_root, 32, RESIZE)
