"""NOAH's few-shot FGVC and domain-generalisation suites: listed, checked and run from miniature trees laid out
as NOAH's data/ folder (ZhangYuanhan-AI/NOAH@e9c55f3), and its list files' line errors named by file:line."""

from pathlib import Path

import numpy as np
import pytest
from trees import write_image
from typer.testing import CliRunner

from peftbench.cli import app
from peftbench.data.loading import read_split
from peftbench.errors import PeftbenchError
from peftbench.store import Store
from peftbench.suites import get_suite

runner = CliRunner()
FEWSHOT, DG = get_suite("fewshot_fgvc"), get_suite("domain_generalization")
RUN = {"fewshot_fgvc": "stanford_cars_shot2_seed1", "domain_generalization": "imagenet_a"}
# the image names of the real lists: subfolders, spaces (ImageNet-A), Stanford Cars' cars_train/ prefix
NAMES = {
    "imagenet_a": "imagenet-a/n01498041/0.00{i}_soap dispenser _ soap dispenser_0.5.jpg",
    "stanford_cars": "cars_train/{i:05d}.jpg",
}


def write_noah_tree(root: Path, suite, per_list: int = 3) -> None:
    """Every list file the suite's tasks name, `per_list` lines each, and the images they name."""
    rng = np.random.default_rng(0)
    written: set[Path] = set()
    for task in suite.tasks:
        for split, relative in task.lists.items():
            lst = root / relative
            if lst in written:
                continue
            written.add(lst)
            image_root = root / task.image_dirs.get(split, task.image_dir)
            pattern = next((p for key, p in NAMES.items() if task.name.startswith(key) and split == "test"), None)
            if pattern is None:
                pattern = "n{label:08d}/" + lst.name.replace(".", "_") + "_{i}.png"
            lines = []
            for i in range(per_list):
                label = (i * 7) % task.num_classes
                name = pattern.format(i=i, label=label)
                write_image(image_root / name, rng)
                lines.append(f"{name} {label}\n")
            lst.parent.mkdir(parents=True, exist_ok=True)
            lst.write_text("".join(lines))


@pytest.fixture(scope="module", params=[FEWSHOT, DG], ids=lambda s: s.name)
def tree(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param.name)
    write_noah_tree(root, request.param)
    return request.param, root


@pytest.mark.parametrize("suite", [FEWSHOT, DG], ids=lambda s: s.name)
def test_list_tasks_shows_every_task(suite):
    result = runner.invoke(app, ["list", "tasks", "--suite", suite.name], env={"COLUMNS": "200"})  # no cut names
    assert result.exit_code == 0, result.output
    for task in suite.tasks:
        assert task.name in result.stdout


def test_suites_hold_noahs_grid_and_targets():
    assert len(FEWSHOT.tasks) == 5 * 5 * 3 and FEWSHOT.groups == ("1-shot", "2-shot", "4-shot", "8-shot", "16-shot")
    cars = FEWSHOT.task("stanford_cars_shot16_seed2")
    assert cars.lists["train"].endswith("standford-cars/annotations/train_meta.list.num_shot_16.seed_2")
    assert cars.splits == {"train": 3136, "val": 1635, "test": 8041} and cars.image_dir == "few-shot/standford-cars"
    assert [t.name for t in DG.tasks] == ["imagenet", "imagenet_v2", "imagenet_sketch", "imagenet_a", "imagenet_r"]
    assert {t.num_classes for t in DG.tasks} == {1000}  # NOAH's 1000-way head, A and R included
    assert len({t.lists["train"] for t in DG.tasks}) == 1  # one 16-shot training split for every target
    assert DG.task("imagenet-adversarial").splits["test"] == 7500


def test_data_check_passes_with_size_warnings(tree):
    suite, root = tree
    result = runner.invoke(app, ["data", "check", "--suite", suite.name, "--data-root", str(root), "--deep"])
    assert result.exit_code == 0, result.output
    assert f"{len(suite.tasks)} task(s) ready" in result.stdout
    assert "warning:" in result.stderr and "expected" in result.stderr  # miniature lists, NOAH's sizes


def test_paths_follow_noahs_image_folders(tree):
    suite, root = tree
    task = suite.task(RUN[suite.name])
    images, labels, sources = read_split(suite, task, "test", root)
    assert all(p.is_file() for p in images) and sources == [root / task.lists["test"]]
    if suite is DG:
        assert " _ soap dispenser" in images[0].name
        assert images[0].is_relative_to(root / "domain-generalization/imagenet-adversarial/imagenet-a")
        train, _, _ = read_split(suite, task, "train", root)
        assert train[0].is_relative_to(root / "few-shot/imagenet/train")
    else:
        assert images[0].is_relative_to(root / "few-shot/standford-cars/cars_train")


def test_one_linear_run_writes_an_ok_record(tree, tmp_path: Path):
    suite, root = tree
    args = ["run", "--method", "linear", "--suite", suite.name, "--task", RUN[suite.name], "--data-root", str(root)]
    args += ["--model", "vit_micro_patch4_32", "--no-pretrained", "--epochs", "1", "--out", str(tmp_path)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    [record] = list(Store(tmp_path).records())
    assert record.status == "ok" and record.spec.task == RUN[suite.name] and record.spec.train_split == "train"


def test_domain_generalisation_trains_once_and_tests_that_model_on_each_test_set(tmp_path: Path):
    write_noah_tree(tmp_path / "data", DG)
    tasks = ["imagenet", "imagenet_v2", "imagenet_a"]
    common = ["--suite", "dg", "--data-root", str(tmp_path / "data"), "--model", "vit_micro_patch4_32"]
    common += ["--no-pretrained", "--epochs", "2", "--device", "cpu"]
    every_task = [a for t in tasks for a in ("--task", t)]
    result = runner.invoke(
        app, ["run", "-m", "linear", "-m", "bitfit", *every_task, *common, "--out", str(tmp_path / "shared")]
    )
    assert result.exit_code == 0, result.output
    records = {(r.spec.method, r.spec.task): r for r in Store(tmp_path / "shared").records()}
    assert len(records) == 6 and all(r.ok for r in records.values())
    for method in ("linear", "bitfit"):
        trainer = records[(method, "imagenet")]
        assert trainer.execution.trained_with is None and trainer.timing.train_seconds > 0
        for task in tasks[1:]:
            reused = records[(method, task)]
            assert reused.execution.trained_with == f"domain_generalization/imagenet {method} seed 42"
            assert reused.timing.train_seconds is None and reused.metrics.final_train_loss == (
                trainer.metrics.final_train_loss
            )
    # the checkpoint evaluated on ImageNet-A is the model a run of ImageNet-A alone trains
    alone = runner.invoke(
        app, ["run", "-m", "bitfit", "--task", "imagenet_a", *common, "--out", str(tmp_path / "alone")]
    )
    assert alone.exit_code == 0, alone.output
    [own] = [r for r in Store(tmp_path / "alone").records() if r.spec.task == "imagenet_a"]
    shared_store = Store(tmp_path / "shared")
    predicted, _ = shared_store.predictions(records[("bitfit", "imagenet_a")])
    assert own.execution.trained_with is None and own.metrics.top1 == records[("bitfit", "imagenet_a")].metrics.top1
    assert np.array_equal(Store(tmp_path / "alone").predictions(own)[0], predicted)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("cars_train/00001.jpg\n", "expected '<image path> <integer label>', got 'cars_train/00001.jpg'"),
        ("cars_train/00001.jpg x\n", "expected '<image path> <integer label>'"),
        ("cars_train/00001.jpg -1\n", "expected '<image path> <integer label>'"),
        ("cars_train/00001.jpg 196\n", "label 196 outside 0..195 for this task"),
        ("../../elsewhere.jpg 3\n", "leaves the image folder"),
    ],
)
def test_bad_list_lines_name_file_and_line(tmp_path: Path, line: str, message: str):
    task = FEWSHOT.task("stanford_cars_shot1_seed0")
    lst = tmp_path / task.lists["train"]
    lst.parent.mkdir(parents=True)
    lst.write_text(f"cars_train/00000.jpg 0\n\n{line}")
    with pytest.raises(PeftbenchError) as error:
        read_split(FEWSHOT, task, "train", tmp_path)
    assert str(error.value).startswith(f"{lst}:3: ") and message in str(error.value)


def test_missing_list_names_the_path_and_layout(tmp_path: Path):
    task = DG.task("imagenet_r")
    with pytest.raises(PeftbenchError, match="missing list file .*imagenet-rendition/annotations/val_meta.list"):
        read_split(DG, task, "test", tmp_path)
