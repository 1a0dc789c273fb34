"""peftbench's `ssf` and its `--protocol paper` recipe, run beside the authors' released code.

    git clone https://github.com/dongzelian/SSF && git -C SSF checkout e94e0e704a4ece1986a537c97a95158b46838f71
    python tools/faithfulness/ssf.py --source SSF [--out ssf.md]

Their code targets timm 0.6.5; on the installed timm it imports after three import-path shims that
change no code of theirs (`timm.models.layers.helpers.to_2tuple`, timm's renamed `Nadam` / `RAdam`
optimisers, and an empty `ipdb`). Their modules then run unchanged: models/vision_transformer.py
(`VisionTransformer(tuning_mode='ssf')`) and optim_factory.py (`create_optimizer_v2`, which freezes and
groups the parameters). Checks at a small width with the same frozen weights and trainable values:
logits and every gradient in fp64, trainable sets and counts, weight-decay groups, init distributions,
and the per-task settings and lr of every epoch of our paper recipe against their per-task scripts
(train_scripts/vit/vtab/<task>/train_ssf.sh) and train.py's defaults, stepped as train.py steps them.
Their train_one_epoch is not run (train.py needs more of timm 0.6.5 than shims should provide).
"""

from __future__ import annotations

import argparse
import re
import sys
import types
import warnings
from pathlib import Path

import torch
from _common import (
    Report,
    agreement,
    finish,
    logits_then_backward,
    max_abs,
    max_relative,
    paper_config,
    parse_args,
    source_commit,
    source_link,
)
from scipy import stats
from timm.models.vision_transformer import VisionTransformer

from peftbench import backbone
from peftbench.api import adapt
from peftbench.methods.ssf import SSF
from peftbench.schedules import lr_per_epoch
from peftbench.suites import get_suite

CLONE, COMMIT = "https://github.com/dongzelian/SSF", "e94e0e704a4ece1986a537c97a95158b46838f71"
WIDTH, DEPTH, HEADS, IMAGE, PATCH, CLASSES = 64, 2, 2, 32, 4, 10
FOLDERS = {"cifar": "cifar_100", "oxford_flowers102": "flowers102", "oxford_iiit_pet": "pets"}  # their folder names
warnings.filterwarnings("ignore")


def install_shims() -> None:
    import timm.layers
    import timm.optim.nadam
    import timm.optim.radam

    helpers = types.ModuleType("timm.models.layers.helpers")
    helpers.to_2tuple = timm.layers.to_2tuple
    sys.modules.setdefault("timm.models.layers.helpers", helpers)
    sys.modules.setdefault("ipdb", types.ModuleType("ipdb"))
    timm.optim.nadam.Nadam = timm.optim.nadam.NAdamLegacy
    timm.optim.radam.RAdam = timm.optim.radam.RAdamLegacy


def models(width: int = WIDTH, depth: int = DEPTH, seed: int = 0):
    """Ours (timm ViT + peftbench's SSF, zero head) and theirs (their ViT, tuning_mode='ssf', frozen and
    grouped by their create_optimizer_v2) and their optimiser."""
    import optim_factory
    from models.vision_transformer import VisionTransformer as TheirViT

    torch.manual_seed(seed)
    ours = VisionTransformer(img_size=IMAGE, patch_size=PATCH, embed_dim=width, depth=depth, num_heads=HEADS,
                             mlp_ratio=2.0, num_classes=CLASSES)  # fmt: skip
    backbone.reset_head(ours, CLASSES)
    adapt(ours, SSF())
    torch.manual_seed(seed + 1)
    theirs = TheirViT(img_size=IMAGE, patch_size=PATCH, embed_dim=width, depth=depth, num_heads=HEADS, mlp_ratio=2.0,
                      num_classes=CLASSES, tuning_mode="ssf")  # fmt: skip
    optimizer = optim_factory.create_optimizer_v2(theirs, "adamw", lr=1e-3, weight_decay=5e-5, tuning_mode="ssf")
    return ours, theirs, optimizer


def their_name(ours_name: str) -> str:
    """Their parameter for one of ours: the frozen layers keep timm's names; each SSF pair sits on the
    module its output enters, as ssf_{scale,shift}_1 (qkv, fc1, norm1, patch embed, final norm) or _2."""
    name = ours_name.replace(".layer.", ".")
    pair = re.fullmatch(r"(.*)\.ssf\.(scale|shift)", ours_name)
    if not pair:
        return name
    where, kind = pair.groups()
    slots = {r"blocks\.(\d+)\.attn\.qkv": r"blocks.\1.attn.ssf_{}_1", r"blocks\.(\d+)\.attn\.proj": r"blocks.\1.attn.ssf_{}_2",
             r"blocks\.(\d+)\.mlp\.fc1": r"blocks.\1.mlp.ssf_{}_1", r"blocks\.(\d+)\.mlp\.fc2": r"blocks.\1.mlp.ssf_{}_2",
             r"blocks\.(\d+)\.norm1": r"blocks.\1.ssf_{}_1", r"blocks\.(\d+)\.norm2": r"blocks.\1.ssf_{}_2",
             r"patch_embed\.proj": "patch_embed.ssf_{}_1", r"norm": "ssf_{}_1"}  # fmt: skip
    for pattern, target in slots.items():
        if re.fullmatch(pattern, where):
            return re.sub(pattern, target, where).format(kind)
    raise KeyError(ours_name)


def pairs(ours, theirs) -> list[tuple[str, torch.nn.Parameter, torch.nn.Parameter]]:
    mine, their = dict(ours.named_parameters()), dict(theirs.named_parameters())
    return [(name, p, their[their_name(name)]) for name, p in mine.items()]


@torch.no_grad()
def share_values(ours, theirs) -> None:
    generator = torch.Generator().manual_seed(7)
    for name, mine, their in pairs(ours, theirs):
        if mine.requires_grad:
            mine.copy_(torch.randn(mine.shape, generator=generator) * 0.05 + (1.0 if name.endswith(".scale") else 0.0))
        their.copy_(mine)


def check_module(report: Report) -> None:
    ours, theirs, optimizer = models()
    share_values(ours, theirs)
    ours, theirs = ours.double().eval(), theirs.double().eval()
    logits_then_backward(report, ours, theirs, IMAGE, "")
    trainable = [(n, m, t) for n, m, t in pairs(ours, theirs) if m.requires_grad]
    worst = max(max_abs(m.grad, t.grad) for _, m, t in trainable)
    report.check(f"gradients of all {len(trainable)} trainable tensors, fp64, max abs difference", worst, "1e-10",
                 worst <= 1e-10)  # fmt: skip
    same_set = all(m.requires_grad == t.requires_grad for _, m, t in pairs(ours, theirs))
    counts = [sum(p.numel() for p in model.parameters() if p.requires_grad) for model in (ours, theirs)]
    report.check("trainable parameters (same tensors on both sides; count ours / theirs)",
                 f"{counts[0]:,} / {counts[1]:,}", "equal", same_set and counts[0] == counts[1])  # fmt: skip
    no_decay = SSF().no_weight_decay(ours)
    decayed = {id(p) for group in optimizer.param_groups if group["weight_decay"] > 0 for p in group["params"]}
    split = [(n not in no_decay) == (id(t) in decayed) for n, _, t in trainable]
    report.check("weight-decay group of every trainable tensor (ours vs their create_optimizer_v2)",
                 f"{sum(split)}/{len(split)}", "all", all(split))  # fmt: skip


def check_init(report: Report) -> None:
    ours, theirs, _ = models(width=256, depth=1, seed=11)
    for kind in ("scale", "shift"):
        found = [(m, t) for n, m, t in pairs(ours, theirs) if n.endswith(f".ssf.{kind}")]
        a = torch.cat([m.detach().flatten() for m, _ in found])
        b = torch.cat([t.detach().flatten() for _, t in found])
        p_value = stats.ks_2samp(a.numpy(), b.numpy()).pvalue
        report.check(f"init of the SSF {kind}s ({a.numel():,} values each): two-sample KS p-value", float(p_value),
                     "> 0.01", p_value > 0.01)  # fmt: skip


def script_flags(source: Path, task: str) -> argparse.Namespace | None:
    """The flags of their per-task script, with train.py's defaults for the rest (read from train.py)."""
    script = source / "train_scripts" / "vit" / "vtab" / FOLDERS.get(task, task) / "train_ssf.sh"
    if not script.is_file():
        return None
    text, defaults = script.read_text(), (source / "train.py").read_text()

    def flag(name: str, kind=float):
        found = re.search(rf"--{name}\s+([^\s\\]+)", text)
        if found:
            return kind(found.group(1))
        default = re.search(rf"'--{name}'[^)]*?default=([^,)\s]+)", defaults)
        return kind(default.group(1).strip("'\"")) if default else None

    processes = int(re.search(r"--nproc_per_node=(\d+)", text).group(1))
    return argparse.Namespace(sched=flag("sched", str), epochs=flag("epochs", int), lr=flag("lr"),
                              min_lr=flag("min-lr"), warmup_lr=flag("warmup-lr"), warmup_epochs=flag("warmup-epochs", int),
                              cooldown_epochs=flag("cooldown-epochs", int), weight_decay=flag("weight-decay"),
                              drop_path=flag("drop-path"), batch_size=flag("batch-size", int) * processes)  # fmt: skip


def their_lrs(args: argparse.Namespace) -> list[float]:
    """train.py: `create_scheduler(args)`, the lr read before each epoch, `lr_scheduler.step(epoch + 1)` after."""
    from timm.scheduler import create_scheduler

    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=args.lr)
    scheduler, num_epochs = create_scheduler(args, optimizer)
    lrs = []
    for epoch in range(num_epochs):
        lrs.append(optimizer.param_groups[0]["lr"])
        scheduler.step(epoch + 1)
    return lrs


def check_recipe(report: Report, source: Path) -> None:
    checked, differ, worst = 0, [], 0.0
    for task in get_suite("vtab1k").tasks:
        args = script_flags(source, task.name)
        if args is None:
            continue
        checked += 1
        ours = paper_config("ssf", "vtab1k", task.name)
        names = ("lr", "weight_decay", "drop_path", "batch_size", "min_lr", "warmup_lr", "warmup_epochs", "epochs",
                 "cooldown_epochs")  # fmt: skip
        if [getattr(ours, n) for n in names] != [getattr(args, n) for n in names]:
            differ.append(task.name)
        worst = max(worst, max_relative(lr_per_epoch(ours), their_lrs(args)))
    report.check(f"settings of the {checked} per-task scripts in this checkout (lr, wd, drop path, effective batch, "
                 "min/warm-up lr, warm-up, epochs, cool-down)",
                 agreement(differ, checked), "all",
                 checked > 0 and not differ)  # fmt: skip
    report.check(f"lr of every epoch on those {checked} tasks (paper recipe vs train.py's stepping), max relative "
                 "difference", worst, "1e-9", worst <= 1e-9)  # fmt: skip
    cfg = paper_config("ssf", "vtab1k", "cifar")
    report.check("paper recipe: precision (their --amp) and head init (init_weights_vit_timm on the new head)",
                 f"{cfg.precision}, {cfg.head_init}", "fp16, trunc_normal",
                 (cfg.precision, cfg.head_init) == ("fp16", "trunc_normal"))  # fmt: skip


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], CLONE, COMMIT)
    install_shims()
    commit = source_commit(args.source)
    report = Report("SSF (Lian et al., NeurIPS 2022): `ssf`, `--protocol paper` (VTAB-1k)",
                    source_link(CLONE, COMMIT, commit),
                    "models/vision_transformer.py, optim_factory.py, train.py (defaults), "
                    "train_scripts/vit/vtab/*/train_ssf.sh")  # fmt: skip
    check_module(report)
    check_init(report)
    check_recipe(report, args.source)
    finish(report, args)


if __name__ == "__main__":
    main()
