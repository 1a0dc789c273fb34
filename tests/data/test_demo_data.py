"""Generated demo tasks (VTAB-1k layout) and the upstream multi-attribute scenes."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import peftbench.data.demo as demo
from peftbench.data.demo import DEMO_TASKS, VERSION_FILE, is_current, render_split, write_demo_task
from peftbench.data.scenes import UPSTREAM_ATTRIBUTES, render_upstream

SIZES = {"train800": 12, "val200": 7, "test": 10}
LISTS = ("train800.txt", "val200.txt", "train800val200.txt", "test.txt")
LINE = re.compile(r"^images/(train800|val200|test)/(\d{6})\.png (\d+)$")


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _read_list(path: Path) -> list[tuple[str, int]]:
    rows = []
    for line in path.read_text().splitlines():
        match = LINE.match(line)
        assert match, f"bad line {line!r} in {path.name}"
        rows.append((line.rsplit(" ", 1)[0], int(match.group(3))))
    return rows


def test_demo_task_names_and_classes():
    assert {name: t.num_classes for name, t in DEMO_TASKS.items()} == {
        "textures": 6,
        "landcover": 5,
        "count": 6,
        "position": 5,
    }


@pytest.mark.parametrize("name", list(DEMO_TASKS))
def test_write_is_deterministic_and_seeded(tmp_path, name):
    write_demo_task(tmp_path / "a", name, SIZES, seed=0)
    write_demo_task(tmp_path / "b", name, SIZES, seed=0)
    write_demo_task(tmp_path / "c", name, SIZES, seed=1)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    a, c = (tmp_path / "a" / "images/test/000000.png"), (tmp_path / "c" / "images/test/000000.png")
    assert a.read_bytes() != c.read_bytes()


@pytest.mark.parametrize("name", list(DEMO_TASKS))
def test_layout_and_list_files(tmp_path, name):
    write_demo_task(tmp_path, name, SIZES)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*LISTS, "images", VERSION_FILE])
    assert is_current(tmp_path)
    lists = {f: _read_list(tmp_path / f) for f in LISTS}
    assert lists["train800val200.txt"] == lists["train800.txt"] + lists["val200.txt"]
    for split, size in SIZES.items():
        rows = lists[f"{split}.txt"]
        assert [path for path, _ in rows] == [f"images/{split}/{i:06d}.png" for i in range(size)]
        assert sorted(p.name for p in (tmp_path / "images" / split).iterdir()) == [f"{i:06d}.png" for i in range(size)]
        assert all(0 <= label < DEMO_TASKS[name].num_classes for _, label in rows)
    with Image.open(tmp_path / lists["test.txt"][0][0]) as image:
        assert (image.size, image.mode) == ((32, 32), "RGB")


def test_rewrite_over_existing_folder_is_identical(tmp_path):
    write_demo_task(tmp_path / "a", "count", SIZES)
    before = _files(tmp_path / "a")
    write_demo_task(tmp_path / "a", "count", SIZES)
    assert _files(tmp_path / "a") == before


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError):
        write_demo_task(tmp_path, "nope", SIZES)
    with pytest.raises(ValueError):
        write_demo_task(tmp_path, "count", {**SIZES, "train800val200": 3})


@pytest.mark.parametrize("name", list(DEMO_TASKS))
def test_labels_balanced_and_images_valid(name):
    k = DEMO_TASKS[name].num_classes
    images, labels = render_split(name, "val200", 10 * k + 3)
    assert images.shape == (10 * k + 3, 32, 32, 3) and images.dtype == np.uint8
    counts = np.bincount(labels, minlength=k)
    assert len(counts) == k and counts.max() - counts.min() <= 1 and counts.min() == 10
    assert images.std() > 10  # not blank


@pytest.mark.parametrize("name", list(DEMO_TASKS))
def test_render_draws_a_label_when_none_given(name):
    task = DEMO_TASKS[name]
    image, label = task.render(np.random.default_rng(0))
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    assert 0 <= label < task.num_classes


def test_splits_use_distinct_streams():
    train, _ = render_split("textures", "train800", 8)
    test, _ = render_split("textures", "test", 8)
    other, _ = render_split("landcover", "train800", 8)
    assert not np.array_equal(train, test) and not np.array_equal(train, other)


def test_upstream_shapes_ranges_and_determinism():
    images, labels = render_upstream(400, seed=3)
    assert images.shape == (400, 32, 32, 3) and images.dtype == np.uint8
    assert labels.shape == (400, len(UPSTREAM_ATTRIBUTES)) and labels.dtype == np.int64
    for column, classes in enumerate(UPSTREAM_ATTRIBUTES.values()):
        assert set(np.unique(labels[:, column])) == set(range(classes))
    again_images, again_labels = render_upstream(400, seed=3)
    assert np.array_equal(images, again_images) and np.array_equal(labels, again_labels)
    assert not np.array_equal(images[:5], render_upstream(5, seed=4)[0])


def test_interrupted_write_leaves_no_test_list(tmp_path, monkeypatch):
    write_demo_task(tmp_path, "position", SIZES)
    real = demo.render_split

    def failing(name, split, n, seed=0):
        if split == "test":
            raise KeyboardInterrupt
        return real(name, split, n, seed)

    monkeypatch.setattr(demo, "render_split", failing)
    with pytest.raises(KeyboardInterrupt):
        write_demo_task(tmp_path, "position", SIZES)
    assert not (tmp_path / "test.txt").exists()
