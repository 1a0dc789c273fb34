"""peftbench's `convpass` and its `--protocol paper` recipe, run beside Convpass's released code.

    git clone https://github.com/JieShibo/PETL-ViT && git -C PETL-ViT checkout 026e4f12cfbe1e46bfb4d3ed5ba09f2d9f83e91e
    python tools/faithfulness/convpass.py --source PETL-ViT [--out convpass.md]

Their module runs unchanged: convpass/vtab/convpass.py (`Convpass`, `set_Convpass`, `forward_block`),
which hard-codes width 768 and the 14 x 14 grid of ViT-B/16 at 224 px, so the comparison model is that
ViT at depth 1. Their `forward_block` reads timm 0.4's single `drop_path` (one rate for both branches);
today's timm Block names it `drop_path1` / `drop_path2` (aliased). Checks: logits and every gradient in
fp64, the training forward with drop path 0.5 and their dropout 0.1 (same masks in the same order), the
trainable count on ViT-B/16 (their rule: names with "adapter" or "head"), inits, and the recipe (per-task
scale and conv init against configs/convpass/, the lr of every epoch against their script's scheduler).
"""

from __future__ import annotations

import copy
import sys
import warnings
from pathlib import Path

import torch
import yaml
from _common import (
    Report,
    agreement,
    finish,
    logits_then_backward,
    max_abs,
    max_relative,
    parse_args,
    same_masks_difference,
    script_scheduler_lrs,
    share_values,
    source_commit,
    source_link,
)
from scipy import stats
from timm.models.vision_transformer import VisionTransformer

from peftbench.api import adapt
from peftbench.methods import get_method
from peftbench.methods.convpass import Convpass
from peftbench.schedules import lr_per_epoch
from peftbench.settings import resolve
from peftbench.suites import get_suite
from peftbench.sweeps.paper_settings import published

CLONE, COMMIT = "https://github.com/JieShibo/PETL-ViT", "026e4f12cfbe1e46bfb4d3ed5ba09f2d9f83e91e"
CLASSES = 10
warnings.filterwarnings("ignore")


def models(module, xavier: bool, scale: float, depth: int = 1, drop_path: float = 0.0, seed: int = 0):
    torch.manual_seed(seed)
    plain = VisionTransformer(img_size=224, patch_size=16, embed_dim=768, depth=depth, num_heads=12,
                              num_classes=CLASSES, drop_path_rate=drop_path)  # fmt: skip
    theirs = copy.deepcopy(plain)
    torch.manual_seed(seed + 1)
    module.set_Convpass(theirs, "convpass", dim=8, s=scale, xavier_init=xavier)
    for block in theirs.blocks:
        block.drop_path = block.drop_path1  # timm 0.4's one drop path (the same rate for both branches)
    for name, p in theirs.named_parameters():  # train.py: only names with "adapter" or "head" train
        p.requires_grad_("adapter" in name or "head" in name)
    ours = copy.deepcopy(plain)
    torch.manual_seed(seed + 2)
    adapt(ours, Convpass(scale=scale, xavier_init=xavier))
    return ours, theirs


def pairs(ours, theirs):
    their = dict(theirs.named_parameters())
    out = []
    for name, p in ours.named_parameters():
        target = name.replace(".norm1.norm.", ".norm1.").replace(".norm2.norm.", ".norm2.")
        for mine, theirs_name in (
            (".drop_path1.bypass.", ".adapter_attn.adapter_"),
            (".drop_path2.bypass.", ".adapter_mlp.adapter_"),
        ):
            target = target.replace(mine, theirs_name)
        out.append((name, p, their[target]))
    return out


def check_module(report: Report, module) -> None:
    for xavier in (False, True):
        ours, theirs = models(module, xavier, 0.5)
        share_values(pairs(ours, theirs))
        ours, theirs = ours.double().eval(), theirs.double().eval()
        x = logits_then_backward(report, ours, theirs, 224, f"xavier_init={xavier}: ")
        trainable = [(n, m, t) for n, m, t in pairs(ours, theirs) if m.requires_grad]
        worst = max(max_abs(m.grad, t.grad) for _, m, t in trainable)
        report.check(f"xavier_init={xavier}: gradients of all {len(trainable)} trainable tensors, fp64, max abs difference",
                     worst, "1e-10", worst <= 1e-10)  # fmt: skip
    ours, theirs = models(module, False, 0.5, drop_path=0.5)
    share_values(pairs(ours, theirs))
    ours, theirs = ours.double().train(), theirs.double().train()
    difference = same_masks_difference(lambda: ours(x), lambda: theirs(x))
    report.check("training forward with drop path 0.5 and dropout 0.1 (same masks), fp64, max abs difference",
                 difference, "1e-10", difference <= 1e-10)  # fmt: skip
    big_ours, big_theirs = models(module, False, 0.1, depth=12)
    counts = [sum(p.numel() for n, p in m.named_parameters() if p.requires_grad and not n.startswith("head"))
              for m in (big_ours, big_theirs)]  # fmt: skip
    report.check("trainable parameters on ViT-B/16 without the head (ours / theirs)", f"{counts[0]:,} / {counts[1]:,}",
                 "equal", counts[0] == counts[1])  # fmt: skip
    for xavier in (False, True):
        fresh_ours, fresh_theirs = models(module, xavier, 0.1, depth=12, seed=5)
        for part in ("down.weight", "conv.weight"):
            a = torch.cat(
                [m.detach().flatten() for n, m, _ in pairs(fresh_ours, fresh_theirs) if n.endswith(f"bypass.{part}")]
            )
            b = torch.cat(
                [t.detach().flatten() for n, _, t in pairs(fresh_ours, fresh_theirs) if n.endswith(f"bypass.{part}")]
            )
            if part == "conv.weight" and not xavier:
                report.check("conv init (xavier_init=False): the centred identity on both sides", "equal" if torch.equal(a, b)
                             else "differs", "equal", torch.equal(a, b))  # fmt: skip
                continue
            p_value = stats.ks_2samp(a.numpy(), b.numpy()).pvalue
            report.check(f"init of {part} (xavier_init={xavier}, {a.numel():,} values): two-sample KS p-value",
                         float(p_value), "> 0.01", p_value > 0.01)  # fmt: skip
        zeros = all(not m.any() and not t.any() for n, m, t in pairs(fresh_ours, fresh_theirs)
                    if n.endswith(("bypass.up.weight", "bypass.up.bias", "bypass.down.bias", "bypass.conv.bias")))  # fmt: skip
        report.check(f"init of up and the biases (xavier_init={xavier}): zero on both sides", "yes" if zeros else "no",
                     "yes", zeros)  # fmt: skip


def check_recipe(report: Report, source: Path) -> None:
    vtab, differ, worst = get_suite("vtab1k"), [], 0.0
    for task in vtab.tasks:
        config = yaml.safe_load(
            (source / "convpass" / "vtab" / "configs" / "convpass" / f"{task.name}.yaml").read_text()
        )
        train, options = resolve(get_method("convpass"), vtab.defaults, published("convpass", vtab, task).settings)
        if (options["scale"], options["xavier_init"]) != (config["scale"], config["xavier_init"]):
            differ.append(task.name)
        worst = max(worst, max_relative(lr_per_epoch(train), script_scheduler_lrs(
            source / "convpass" / "vtab" / "train.py", train.lr)))  # fmt: skip
    report.check("per-task scale and conv init vs configs/convpass/<task>.yaml",
                 agreement(differ, len(vtab.tasks)),
                 "all", not differ)  # fmt: skip
    report.check(f"lr of every epoch on all {len(vtab.tasks)} tasks vs their scheduler and loop, max relative difference",
                 worst, "1e-9", worst <= 1e-9)  # fmt: skip


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], CLONE, COMMIT)
    commit = source_commit(args.source)
    report = Report("Convpass (Jie & Deng, 2022): `convpass`, `--protocol paper`",
                    source_link(CLONE, COMMIT, commit),
                    "convpass/vtab/convpass.py, convpass/vtab/train.py, convpass/vtab/configs/convpass/*.yaml")  # fmt: skip
    sys.path.insert(0, str(args.source / "convpass" / "vtab"))
    import convpass as module

    check_module(report, module)
    check_recipe(report, args.source)
    finish(report, args)


if __name__ == "__main__":
    main()
