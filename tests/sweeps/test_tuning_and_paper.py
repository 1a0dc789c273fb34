"""Protocol building blocks: grids, the tune choice, seeds, published settings, drop path."""

import pytest
import torch
from timm.layers import DropPath
from torch import nn

from peftbench.backbone import create_backbone, set_drop_path
from peftbench.errors import PeftbenchError
from peftbench.methods import get_method
from peftbench.suites import get_suite
from peftbench.sweeps.paper_settings import published
from peftbench.sweeps.protocols import seeds_from
from peftbench.sweeps.tuning import choose, grid_points, method_grid, parse_grid, trial_values

VTAB, FGVC, DEMO = get_suite("vtab"), get_suite("fgvc"), get_suite("demo")


def _trial(lr: float, wd: float, val: float | None) -> dict:
    point = {"lr": lr, "weight_decay": wd}
    if val is None:
        return {"point": point, "settings": point, "status": "failed", "reason": "training loss became nan"}
    return {"point": point, "settings": point, "status": "ok", "val_top1": val}


def test_choice_is_the_best_val_score_ties_to_the_smaller_lr_failures_ignored():
    trials = [
        _trial(0.1, 0, 71.0),
        _trial(0.01, 0, 74.5),
        _trial(1.0, 0, None),
        _trial(0.001, 1e-4, 74.5),
        _trial(0.05, 0, 60.0),
    ]
    assert choose(trials)["point"] == {"lr": 0.001, "weight_decay": 1e-4}
    assert choose(trials[:3])["point"]["lr"] == 0.01
    with pytest.raises(PeftbenchError, match="every tune trial failed.*nan"):
        choose([_trial(1.0, 0, None)])


def test_grid_parsing_and_order():
    grid = parse_grid(["lr=1e-3,5e-3", "weight_decay=0,1e-4"])
    assert grid == {"lr": ["1e-3", "5e-3"], "weight_decay": ["0", "1e-4"]}
    typed = method_grid(get_method("lora"), VTAB, {"lr": 1e-3}, grid)
    assert grid_points(typed) == [
        {"lr": 1e-3, "weight_decay": 0.0},
        {"lr": 1e-3, "weight_decay": 1e-4},
        {"lr": 5e-3, "weight_decay": 0.0},
        {"lr": 5e-3, "weight_decay": 1e-4},
    ]
    for bad in (["lr"], ["lr=1e-3,"], ["lr=1,2", "lr=3"]):
        with pytest.raises(PeftbenchError, match="--grid"):
            parse_grid(bad)


def test_vpt_tunes_over_its_own_grid_with_lr_per_256_images():
    vpt = get_method("vpt_deep")
    grid = method_grid(vpt, VTAB, {"lr": 0.25, "batch_size": 64}, {})
    points = grid_points(grid)
    assert len(points) == 40 and points[0] == {"lr": 50.0, "weight_decay": 0.01}
    assert trial_values({"lr": 0.25, "batch_size": 64, "weight_decay": 1e-3}, points[0], per_256=True) == {
        "lr": 12.5,
        "weight_decay": 0.01,
    }
    demo = method_grid(get_method("lora"), DEMO, {"lr": 1e-3}, {})  # the demo suite's small relative grid
    assert demo["lr"] == pytest.approx([3e-4, 1e-3, 3e-3])


def test_seeds_are_vpts_first_n_or_the_given_ones():
    assert seeds_from(None, 3) == [42, 44, 82]
    assert seeds_from([7, 7, 1], None) == [7, 1]
    assert seeds_from(None, None) == [42]
    with pytest.raises(PeftbenchError, match="exclude each other"):
        seeds_from([1], 2)
    with pytest.raises(PeftbenchError, match=r"within 1\.\.5"):
        seeds_from(None, 6)


def test_rlrr_published_settings_per_task_with_its_recipe():
    cifar = published("rlrr", VTAB, VTAB.task("cifar"))
    assert {k: cifar.settings[k] for k in ("lr", "weight_decay", "drop_path")} == {
        "lr": "3e-3",
        "weight_decay": "5e-5",
        "drop_path": "0.1",
    }
    assert cifar.settings["batch_size"] == 32 and cifar.settings["cooldown_epochs"] == 10
    assert cifar.settings["drop_path_mode"] == "dropout" and cifar.recipe == "vtab-resize-half"
    assert published("rlrr", VTAB, VTAB.task("dtd")).recipe == "vtab-resize-hflip-half"  # hflip column: yes
    cub = published("rlrr", FGVC, FGVC.task("CUB_200_2011"))
    assert cub.settings["schedule"] == "cosine-restarts" and cub.settings["epochs"] == 50 and cub.recipe == "rlrr-fgvc"
    assert "schedule" not in published("rlrr", FGVC, FGVC.task("NABirds")).settings  # the plain cosine


def test_ssf_and_noah_published_settings():
    ssf = published("ssf", VTAB, VTAB.task("caltech101"))
    assert ssf.settings["batch_size"] == 64  # 2 processes x 32
    assert ssf.settings["lr"] == "1e-3" and ssf.settings["weight_decay"] == "5e-2"
    lora = published("lora_qkv", VTAB, VTAB.task("svhn"))
    assert lora.settings["lr"] == 1e-3 and lora.settings["drop_path"] == 0.1 and lora.recipe == "vtab-resize-imagenet"


@pytest.mark.parametrize(
    "method, suite, message",
    [
        ("vpt_deep", VTAB, "no fixed published settings.*--protocol tune"),
        ("full", VTAB, "no fixed published settings"),
        ("rlrr", DEMO, "not for suite 'demo'"),
        ("ssf", FGVC, "EMA weights, mixup"),
    ],
)
def test_methods_without_published_settings_are_refused(method, suite, message):
    with pytest.raises(PeftbenchError, match=message):
        published(method, suite, suite.tasks[0])


def test_drop_path_rises_linearly_in_both_modes():
    model, _ = create_backbone("vit_micro_patch4_32", 3, None)  # depth 4
    set_drop_path(model, 0.3, "dropout")
    assert isinstance(model.blocks[0].drop_path1, nn.Identity)
    assert [b.drop_path2.p for b in model.blocks[1:]] == pytest.approx([0.1, 0.2, 0.3])
    assert all(type(b.drop_path1) is nn.Dropout for b in model.blocks[1:])
    set_drop_path(model, 0.3, "stochastic")
    assert [b.drop_path1.drop_prob for b in model.blocks[1:]] == pytest.approx([0.1, 0.2, 0.3])
    assert all(isinstance(b.drop_path1, DropPath) for b in model.blocks[1:])
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    set_drop_path(model, 0.0)
    reference = model(x)
    set_drop_path(model, 0.5, "dropout")
    assert torch.allclose(model(x), reference)  # inactive at evaluation


def test_method_defaults_follow_the_authors_code():
    """RLRR's element-wise drop path under every protocol; NOAH's adapter lr 1e-3 (its scripts since fde4c09)."""
    from peftbench.settings import resolve

    rlrr, _ = resolve(get_method("rlrr"), VTAB.defaults, {})
    adapter, options = resolve(get_method("adapter"), VTAB.defaults, {})
    assert rlrr.drop_path_mode == "dropout" and adapter.lr == 1e-3
    assert options == {"init": "effective"}  # a default changed since runs were keyed: the spec holds it (spec.py)
