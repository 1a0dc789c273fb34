"""peftbench's `fact_tt` and `fact_tk` and their `--protocol paper` recipes, run beside FacT's released code.

    git clone https://github.com/JieShibo/PETL-ViT && git -C PETL-ViT checkout 026e4f12cfbe1e46bfb4d3ed5ba09f2d9f83e91e
    python tools/faithfulness/fact.py --source PETL-ViT [--out fact.md]

Their modules run unchanged: FacT/fact_tt.py and FacT/fact_tk.py (`set_FacT`, which patches a timm ViT's
attention and MLP forwards, reading the module-level `vit` their script sets). Their scripts import
avalanche's Accuracy (for evaluation only), stubbed here, and test `type(m) == timm.models.layers.mlp.Mlp`,
timm 0.4's path of today's `timm.layers.Mlp`, which a shim provides; today's timm Block also passes
`attn_mask=None` to the attention, which their patched forward predates (a wrapper drops it), and its
Mlp names timm 0.4's single `drop` (p = 0) `drop1` / `drop2` (aliased). `set_FacT` hard-codes width 768 and ViT-B's
144 FacT-TK slots, so the comparison model is 768 wide at depth 2 (32 px, patch 4). Checks: logits and
every gradient in fp64, the training forward with their dropout 0.1 (same masks in the same order),
trainable counts on ViT-B/16 (their rule: names with FacT or head), inits, and the recipe: per-task rank and
scale against configs/{tt,tk}/, and the lr of every epoch against the CosineLRScheduler call of their script
stepped as it steps it.
"""

from __future__ import annotations

import copy
import sys
import types
import warnings
from pathlib import Path

import torch
import yaml
from _common import (
    Report,
    agreement,
    compare_inits,
    finish,
    logits_then_backward,
    max_abs,
    max_relative,
    paper_config,
    parse_args,
    script_scheduler_lrs,
    source_commit,
    source_link,
)
from timm.models.vision_transformer import VisionTransformer

from peftbench.api import adapt
from peftbench.methods.fact import FacTTK, FacTTT
from peftbench.schedules import lr_per_epoch
from peftbench.suites import get_suite

CLONE, COMMIT = "https://github.com/JieShibo/PETL-ViT", "026e4f12cfbe1e46bfb4d3ed5ba09f2d9f83e91e"
WIDTH, DEPTH, IMAGE, PATCH, CLASSES = 768, 2, 32, 4, 10
warnings.filterwarnings("ignore")


def their_module(source: Path, variant: str):
    """FacT/fact_<variant>.py, imported with avalanche's Accuracy stubbed."""
    for name in ("avalanche", "avalanche.evaluation", "avalanche.evaluation.metrics",
                 "avalanche.evaluation.metrics.accuracy"):  # fmt: skip
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["avalanche.evaluation.metrics.accuracy"].Accuracy = object
    import timm.layers
    import timm.models.layers as old_layers  # timm 0.4's path, which their type check reads

    mlp = types.ModuleType("timm.models.layers.mlp")
    mlp.Mlp = timm.layers.Mlp
    old_layers.mlp = sys.modules["timm.models.layers.mlp"] = mlp
    sys.path.insert(0, str(source / "FacT"))
    module = __import__(f"fact_{variant}")
    return module


def models(module, variant: str, rank: int, scale: float, depth: int = DEPTH, seed: int = 0):
    torch.manual_seed(seed)
    plain = VisionTransformer(img_size=IMAGE, patch_size=PATCH, embed_dim=WIDTH, depth=depth, num_heads=12,
                              mlp_ratio=4.0, num_classes=CLASSES)  # fmt: skip
    theirs = copy.deepcopy(plain)
    module.vit = theirs  # their forwards read the script's global `vit`
    torch.manual_seed(seed + 1)
    module.set_FacT(theirs, dim=rank, s=scale)
    for block in theirs.blocks:  # today's timm Block passes attn_mask=None; their forward predates the argument
        block.attn.forward = (lambda forward: lambda x, **unused: forward(x))(block.attn.forward)
        block.mlp.drop = block.mlp.drop1  # timm 0.4's Mlp had one `drop` (p = 0 in both): their forward reads it
    for name, p in theirs.named_parameters():  # their main: only FacT and head parameters train
        p.requires_grad_("FacT" in name or "head" in name)
    ours = copy.deepcopy(plain)
    torch.manual_seed(seed + 2)
    adapt(ours, (FacTTT if variant == "tt" else FacTTK)(rank=rank, scale=scale))
    return ours, theirs


def pairs(ours, theirs, variant: str) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(label, our tensor, their tensor) of every trainable value; their P has ViT-B's 144 columns."""
    out = [("U", ours.fact.u.weight, theirs.FacTu.weight), ("V", ours.fact.v.weight, theirs.FacTv.weight),
           ("head", ours.head.weight, theirs.head.weight), ("head bias", ours.head.bias, theirs.head.bias)]  # fmt: skip
    if variant == "tk":
        columns = ours.fact.loadings.shape[1]
        return out + [("C", ours.fact.core, theirs.FacTc), ("P", ours.fact.loadings, theirs.FacTp[:, :columns])]
    for i, (ob, tb) in enumerate(zip(ours.blocks, theirs.blocks)):
        for j, name in enumerate("qkv"):
            out.append((f"{i} {name}", ob.attn.qkv.cores[j], getattr(tb.attn, f"{name}_FacTs").weight))
        out += [(f"{i} proj", ob.attn.proj.cores[0], tb.attn.proj_FacTs.weight),
                (f"{i} fc1", ob.mlp.fc1.cores[0], tb.mlp.fc1_FacTs.weight),
                (f"{i} fc2", ob.mlp.fc2.cores[0], tb.mlp.fc2_FacTs.weight)]  # fmt: skip
    return out


@torch.no_grad()
def share_values(ours, theirs, variant: str) -> None:
    generator = torch.Generator().manual_seed(7)
    for _, mine, their in pairs(ours, theirs, variant):
        mine.copy_(torch.randn(mine.shape, generator=generator) * 0.05)
        their.copy_(mine)


def check_variant(report: Report, module, variant: str) -> None:
    name = f"fact_{variant}"
    rank = 8 if variant == "tt" else 16
    ours, theirs = models(module, variant, rank, 0.5)
    share_values(ours, theirs, variant)
    ours, theirs = ours.double().eval(), theirs.double().eval()
    x = logits_then_backward(report, ours, theirs, IMAGE, f"{name}: ")
    worst = 0.0
    for label, mine, their in pairs(ours, theirs, variant):
        their_grad = theirs.FacTp.grad[:, : mine.shape[1]] if label == "P" else their.grad
        worst = max(worst, max_abs(mine.grad, their_grad))
    report.check(
        f"{name}: gradients of every trainable tensor, fp64, max abs difference", worst, "1e-10", worst <= 1e-10
    )

    ours, theirs = ours.train(), theirs.train()
    torch.manual_seed(123)
    mine = ours(x)
    torch.manual_seed(123)
    their = theirs(x)
    difference = max_abs(mine, their)
    report.check(f"{name}: training forward with their dropout 0.1 (same masks), fp64, max abs difference",
                 difference, "1e-10", difference <= 1e-10)  # fmt: skip

    big_ours, big_theirs = models(module, variant, 8 if variant == "tt" else 32, 1.0, depth=12)
    counts = [sum(p.numel() for n, p in m.named_parameters() if p.requires_grad and not n.startswith("head"))
              for m in (big_ours, big_theirs)]  # fmt: skip
    report.check(f"{name}: trainable parameters on ViT-B/16 without the head (ours / theirs)",
                 f"{counts[0]:,} / {counts[1]:,}", "equal", counts[0] == counts[1])  # fmt: skip
    pools: dict[str, tuple[list, list]] = {}
    for label, mine, their in pairs(big_ours, big_theirs, variant):
        if not label.startswith("head"):
            a, b = pools.setdefault(label.split()[-1], ([], []))  # the layer's cores pooled by kind
            a.append(mine.detach().flatten())
            b.append(their.detach().flatten())
    compare_inits(report, pools, f"{name}: ")


def check_recipe(report: Report, source: Path, variant: str) -> None:
    name, differ, worst = f"fact_{variant}", [], 0.0
    tasks = get_suite("vtab1k").tasks
    for task in tasks:
        config = yaml.safe_load((source / "FacT" / "configs" / variant / f"{task.name}.yaml").read_text())
        from peftbench.methods import get_method
        from peftbench.settings import resolve
        from peftbench.sweeps.paper_settings import published

        found = published(name, get_suite("vtab1k"), task)
        train, options = resolve(get_method(name), get_suite("vtab1k").defaults, found.settings)
        if (options["rank"], options["scale"]) != (config["rank"], config["scale"]):
            differ.append(task.name)
        worst = max(
            worst,
            max_relative(lr_per_epoch(train), script_scheduler_lrs(source / "FacT" / f"fact_{variant}.py", train.lr)),
        )
    report.check(f"{name}: per-task rank and scale vs configs/{variant}/<task>.yaml",
                 agreement(differ, len(tasks)), "all",
                 not differ)  # fmt: skip
    report.check(f"{name}: lr of every epoch on all {len(tasks)} tasks vs their scheduler and loop, max relative "
                 "difference", worst, "1e-9", worst <= 1e-9)  # fmt: skip
    cfg = paper_config(name, "vtab1k", "cifar")
    text = (source / "FacT" / f"fact_{variant}.py").read_text()
    one_group = "AdamW(trainable, lr=args.lr, weight_decay=args.wd)" in text
    report.check(f"{name}: one weight-decay group over every trainable tensor (ours: none exempt) and the recipe's "
                 "precision, head init, drop path", f"{one_group}, {cfg.precision}, {cfg.head_init}, {cfg.drop_path}",
                 "True, fp32, linear, 0.1", one_group and (cfg.precision, cfg.head_init, cfg.drop_path) ==
                 ("fp32", "linear", 0.1) and not FacTTT().no_weight_decay(VisionTransformer(depth=1)))  # fmt: skip


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], CLONE, COMMIT)
    commit = source_commit(args.source)
    report = Report("FacT (Jie & Deng, AAAI 2023): `fact_tt`, `fact_tk`, `--protocol paper`",
                    source_link(CLONE, COMMIT, commit),
                    "FacT/fact_tt.py, FacT/fact_tk.py, FacT/configs/{tt,tk}/*.yaml")  # fmt: skip
    for variant in ("tt", "tk"):
        module = their_module(args.source, variant)
        check_variant(report, module, variant)
        check_recipe(report, args.source, variant)
        sys.path.remove(str(args.source / "FacT"))
    finish(report, args)


if __name__ == "__main__":
    main()
