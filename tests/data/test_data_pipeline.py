"""Loader + cache + device batches: decoded once, rebuilt on change, equal to the direct PIL path."""

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_vtab_task
from PIL import Image
from trees import write_fgvc_tree

from peftbench.data import load_split
from peftbench.data.batches import BatchMaker
from peftbench.data.images import shorter_side_size
from peftbench.data.recipes import RECIPES
from peftbench.suites import get_suite

VTAB, FGVC = get_suite("vtab"), get_suite("fgvc")
CPU = torch.device("cpu")


def pil_inputs(paths: list[Path], size: tuple[int, int]) -> torch.Tensor:
    arrays = [np.asarray(Image.open(p).convert("RGB").resize(size, Image.BICUBIC)) for p in paths]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)


def test_second_load_decodes_nothing_and_a_changed_list_rebuilds(tmp_path: Path):
    write_vtab_task(tmp_path / "data", "dtd", image_size=16)

    def load():
        return load_split(VTAB, VTAB.task("dtd"), "test", tmp_path / "data", 32, RECIPES["vtab-resize"], tmp_path / "c")

    first, second = load(), load()
    assert first.built and not second.built
    assert first.images.shape[-2:] == (16, 16)  # one native size smaller than the input: kept native
    assert first.meta["source"]["images"] == 48
    list_file = tmp_path / "data" / "dtd" / "test.txt"
    list_file.write_text("\n".join(list_file.read_text().splitlines()[:10]) + "\n")
    third = load()
    assert third.built and len(third) == 10


def test_a_truncated_cache_file_is_rebuilt_not_used(tmp_path: Path):
    write_vtab_task(tmp_path / "data", "dtd", image_size=16)

    def load():
        return load_split(VTAB, VTAB.task("dtd"), "test", tmp_path / "data", 32, RECIPES["vtab-resize"], tmp_path / "c")

    original = load().images.clone()  # (a mapped file must not be read after it shrinks: SIGBUS)
    data_file = next(
        p for p in (tmp_path / "c").glob("splits/*/*") if p.name != "meta.json" and p.stat().st_size > 1000
    )
    with data_file.open("r+b") as handle:
        handle.truncate(data_file.stat().st_size // 2)
    with pytest.warns(UserWarning, match="rebuilding cache entry"):
        rebuilt = load()
    assert rebuilt.built and torch.equal(rebuilt.images, original)


def test_native_images_resized_on_the_device_equal_pil_within_one_grey_level(tmp_path: Path):
    write_vtab_task(tmp_path / "data", "dtd", image_size=16, suffix=".png")
    split = load_split(VTAB, VTAB.task("dtd"), "test", tmp_path / "data", 32, RECIPES["vtab-resize"], tmp_path / "c")
    inputs = BatchMaker(split, RECIPES["vtab-resize"], 32, CPU, train=False)(torch.arange(len(split)))
    paths = sorted((tmp_path / "data" / "dtd" / "images" / "test").glob("*.png"))
    difference = (inputs.int() - pil_inputs(paths, (32, 32)).int()).abs().max().item()
    assert inputs.shape == (48, 3, 32, 32) and difference <= 1


@pytest.mark.parametrize("recipe", ["vpt-fgvc", "rlrr-fgvc"])
def test_fgvc_eval_inputs_equal_pil_resize_then_centre_crop(tmp_path: Path, recipe: str):
    """torchvision's Resize on PIL images (VPT's Resize(256), RLRR's Resize((256, 256))) is PIL bilinear."""
    write_fgvc_tree(tmp_path)
    task = FGVC.task("StanfordCars")
    split = load_split(FGVC, task, "test", tmp_path, 32, RECIPES[recipe], tmp_path / "c")
    inputs = BatchMaker(split, RECIPES[recipe], 32, CPU, train=False)(torch.arange(len(split)))
    from peftbench.data.fgvc import read_split

    paths, _ = read_split(tmp_path / "StanfordCars", "", "test", task.num_classes)
    for path, got in zip(paths, inputs):
        image = Image.open(path).convert("RGB")
        size = shorter_side_size(*image.size, 37) if recipe == "vpt-fgvc" else (37, 37)  # round(32 * 256 / 224)
        resized = np.array(image.resize(size, Image.BILINEAR))
        top, left = round((size[1] - 32) / 2), round((size[0] - 32) / 2)
        expected = torch.from_numpy(resized[top : top + 32, left : left + 32]).permute(2, 0, 1)
        assert torch.equal(got, expected)


def test_training_batches_are_cropped_and_flipped_per_image(tmp_path: Path):
    write_fgvc_tree(tmp_path)
    split = load_split(FGVC, FGVC.task("CUB_200_2011"), "trainval", tmp_path, 32, RECIPES["rlrr-fgvc"], tmp_path / "c")
    maker = BatchMaker(split, RECIPES["rlrr-fgvc"], 32, CPU, train=True, resident=True)
    torch.manual_seed(0)
    first = maker(torch.arange(len(split)))
    second = maker(torch.arange(len(split)))
    assert first.shape == (len(split), 3, 32, 32) and not torch.equal(first, second)


def test_staged_batches_equal_the_plain_gather_across_buffer_turns_and_growth(tmp_path: Path):
    write_vtab_task(tmp_path, "cifar", sizes={"train800": 8, "val200": 4, "test": 40}, image_size=48)
    split = load_split(VTAB, VTAB.task("cifar"), "test", tmp_path, 32, RECIPES["vtab-resize"], tmp_path / "c")
    staged = BatchMaker(split, RECIPES["vtab-resize"], 32, CPU, train=False, staged=True)
    plain = BatchMaker(split, RECIPES["vtab-resize"], 32, CPU, train=False)
    assert staged.staging is not None and plain.staging is None  # CPU: plain unless asked
    kept = []
    for indices in (torch.arange(0, 8), torch.arange(8, 16), torch.tensor([39, 3, 3, 20]), torch.arange(10, 40)):
        batch = staged.host_batch(indices)
        assert torch.equal(batch, split.batch(indices)) and torch.equal(batch, plain.host_batch(indices))
        kept.append((indices, batch))
    assert torch.equal(kept[-2][1], split.batch(kept[-2][0]))  # the previous batch survives one more gather
