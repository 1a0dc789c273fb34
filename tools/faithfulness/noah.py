"""peftbench's `adapter` (Adapter-8) and `lora_qkv` (LoRA-8) and their `--protocol paper` recipes, run
beside NOAH's released code (its baselines on VTAB-1k).

    git clone https://github.com/ZhangYuanhan-AI/NOAH && git -C NOAH checkout e9c55f360be4f7f1133a08bf84f86f0309e98f8c
    python tools/faithfulness/noah.py --source NOAH [--out noah.md]

Their code targets timm 0.5.4 and torch 1.8; on the installed versions their model imports after two
shims that change none of their code (`torch._six.container_abcs`, which torch removed, and
`timm.models.registry.register_model` as the identity, since their model file registers its
variants with timm 0.5.4's config format). Their model then runs unchanged:
model/supernet_vision_transformer_timm.py (`VisionTransformer` with its own `init_weights`,
`freeze_stages`, `reset_classifier` and `set_sample_config` from the experiments/{Adapter,LoRA}
retrain configs). Checks at a small width with the same frozen weights and trainable values: logits
and every gradient in fp64, trainable sets and counts, weight-decay groups (timm's optimiser
factory, which their create_optimizer calls), the init distributions as their constructor leaves
them, and the recipe: the configs' ranks, the scripts' lr / weight decay / batch / epochs, the
parser's defaults (warm-up, min lr, drop rates, amp) and the lr of every epoch stepped as
supernet_train_prompt.py steps it. Their train_one_epoch is not run (its module imports their
data stack: cv2, skimage).
"""

from __future__ import annotations

import argparse
import collections.abc
import re
import sys
import types
import warnings
from pathlib import Path

import torch
from _common import (
    Report,
    compare_inits,
    finish,
    logits_then_backward,
    max_abs,
    max_relative,
    paper_config,
    parse_args,
    source_commit,
    source_link,
)
from timm.models.vision_transformer import VisionTransformer

from peftbench import backbone
from peftbench.api import adapt
from peftbench.methods.adapter import Adapter
from peftbench.methods.lora_qkv import LoRAQKV
from peftbench.schedules import lr_per_epoch

CLONE, COMMIT = "https://github.com/ZhangYuanhan-AI/NOAH", "e9c55f360be4f7f1133a08bf84f86f0309e98f8c"
WIDTH, DEPTH, HEADS, IMAGE, PATCH, CLASSES, RANK = 64, 2, 2, 32, 4, 10, 8
warnings.filterwarnings("ignore")


def install_shims() -> None:
    six = types.ModuleType("torch._six")
    six.container_abcs, six.string_classes, six.int_classes = collections.abc, (str, bytes), int
    sys.modules.setdefault("torch._six", six)
    registry = types.ModuleType("timm.models.registry")
    registry.register_model = lambda function: function
    sys.modules["timm.models.registry"] = registry


def theirs_model(kind: str, width: int = WIDTH, depth: int = DEPTH, seed: int = 1):
    """Their ViT as supernet_train_prompt.py builds it for a retrain run (a 1000-class head, then
    `reset_classifier(nb_classes)`), before `set_sample_config`."""
    from model.supernet_vision_transformer_timm import VisionTransformer as TheirViT

    torch.manual_seed(seed)
    model = TheirViT(img_size=IMAGE, patch_size=PATCH, embed_dim=width, depth=depth, num_heads=HEADS, mlp_ratio=2.0,
                     super_prompt_tuning_dim=0, super_LoRA_dim=RANK if kind == "lora" else 0,
                     super_adapter_dim=RANK if kind == "adapter" else 0, super_prefix_dim=0, drop_rate_LoRA=0.1,
                     drop_rate_adapter=0.1)  # fmt: skip
    model.reset_classifier(CLASSES)
    return model


def sample(model, kind: str, depth: int = DEPTH) -> None:
    """`set_sample_config` with the retrain config's per-layer dims (experiments/*/ViT-B_prompt_*_8.yaml)."""
    dims = [RANK] * depth
    zeros = [0] * depth
    model.set_sample_config({"visual_prompt_dim": zeros, "lora_dim": dims if kind == "lora" else zeros,
                             "adapter_dim": dims if kind == "adapter" else zeros, "prefix_dim": zeros})  # fmt: skip


def ours_model(kind: str, width: int = WIDTH, depth: int = DEPTH, seed: int = 0):
    torch.manual_seed(seed)
    model = VisionTransformer(img_size=IMAGE, patch_size=PATCH, embed_dim=width, depth=depth, num_heads=HEADS,
                              mlp_ratio=2.0, num_classes=CLASSES)  # fmt: skip
    backbone.reset_head(model, CLASSES)
    backbone.init_head(model, paper_config(_method(kind), "vtab1k", "cifar").head_init)
    adapt(model, Adapter(dim=RANK) if kind == "adapter" else LoRAQKV(rank=RANK))
    return model


def _method(kind: str) -> str:
    return "adapter" if kind == "adapter" else "lora_qkv"


def pairs(ours, theirs, kind: str) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(our name, our tensor in their layout, their tensor) for every parameter both models have."""
    # their set_sample_config assigns ln2.bias to an attribute too, which registers it a second time
    mine, their = dict(ours.named_parameters()), dict(theirs.named_parameters(remove_duplicate=False))
    out = []
    for name, p in mine.items():
        if ".attn.qkv.lora_" in name:  # ours: A (in x r), B (r x 3D); theirs: LoRA_a (r x in), LoRA_b (3D x r)
            block = name.split(".")[1]
            target = f"blocks.{block}.attn.LoRA_{'a' if name.endswith('lora_A') else 'b'}.weight"
            out.append((name, p.T, their[target]))
        elif ".drop_path2.adapter." in name:  # ours: down / up; theirs: ln1 / ln2
            target = name.replace("drop_path2.adapter.down", "adapter.ln1").replace(
                "drop_path2.adapter.up", "adapter.ln2"
            )
            out.append((name, p, their[target]))
        else:
            out.append((name, p, their[name.replace(".base_layer.", ".")]))
    return out


@torch.no_grad()
def share_values(ours, theirs, kind: str) -> None:
    generator = torch.Generator().manual_seed(7)
    for _, mine, their in pairs(ours, theirs, kind):
        if mine.requires_grad:
            mine.copy_(torch.randn(mine.shape, generator=generator) * 0.05)
        their.copy_(mine)


def check_module(report: Report, kind: str) -> None:
    ours, theirs = ours_model(kind).double(), theirs_model(kind).double()
    share_values(ours, theirs, kind)
    sample(theirs, kind)  # after .double(): their sampled weights are views of the parameters
    ours.eval(), theirs.eval()
    logits_then_backward(report, ours, theirs, IMAGE, f"{_method(kind)}: ")
    trainable = [(n, m, t) for n, m, t in pairs(ours, theirs, kind) if m.requires_grad]
    worst = max(max_abs(m.grad if m.grad is not None else dict(ours.named_parameters())[n].grad.T, t.grad)
                for n, m, t in trainable)  # fmt: skip
    report.check(f"{_method(kind)}: gradients of all {len(trainable)} trainable tensors, fp64, max abs difference",
                 worst, "1e-10", worst <= 1e-10)  # fmt: skip
    same = all(m.requires_grad == t.requires_grad for _, m, t in pairs(ours, theirs, kind))
    counts = [sum(p.numel() for p in model.parameters() if p.requires_grad) for model in (ours, theirs)]
    report.check(f"{_method(kind)}: trainable parameters (same tensors; count ours / theirs)",
                 f"{counts[0]:,} / {counts[1]:,}", "equal", same and counts[0] == counts[1])  # fmt: skip
    from timm.optim import create_optimizer_v2

    method = dict(adapter=Adapter(), lora=LoRAQKV())[kind]
    no_decay = method.no_weight_decay(ours)
    optimizer = create_optimizer_v2(theirs, "adamw", lr=1e-3, weight_decay=1e-4)
    decayed = {id(p) for g in optimizer.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    split = [(n not in no_decay) == (id(t) in decayed) for n, _, t in trainable]
    report.check(f"{_method(kind)}: weight-decay group of every trainable tensor (ours vs timm's factory)",
                 f"{sum(split)}/{len(split)}", "all", all(split))  # fmt: skip


def check_init(report: Report, kind: str) -> None:
    """The values each side starts training from, as distributions (a width-256 model each)."""
    ours, theirs = ours_model(kind, width=256, depth=1, seed=11), theirs_model(kind, width=256, depth=1, seed=12)
    groups: dict[str, tuple[list, list]] = {}
    for name, mine, their in pairs(ours, theirs, kind):
        if mine.requires_grad:
            kind_of = "head weight" if name == "head.weight" else "biases" if name.endswith("bias") else "weights"
            a, b = groups.setdefault(kind_of, ([], []))
            a.append(mine.detach().flatten())
            b.append(their.detach().flatten())
    compare_inits(report, groups, f"{_method(kind)}: ")


def their_defaults(source: Path) -> argparse.Namespace:
    """supernet_train_prompt.py's parser defaults, read from the file (importing it needs cv2 and skimage)."""
    text = (source / "supernet_train_prompt.py").read_text()

    def default(flag: str):
        found = re.search(rf"'--{flag}'[^)]*?default=([^,)\s]+)", text)
        return found.group(1).strip("'\"") if found else None

    amp_first = text.index("'--amp'") < text.index("'--no-amp'")  # argparse keeps the first action's default
    return argparse.Namespace(sched=default("sched"), min_lr=float(default("min-lr")), warmup_lr=float(default("warmup-lr")),
                              warmup_epochs=int(default("warmup-epochs")), cooldown_epochs=int(default("cooldown-epochs")),
                              drop_path=float(default("drop-path")), drop_rate_LoRA=float(default("drop_rate_LoRA")),
                              drop_rate_adapter=float(default("drop_rate_adapter")),
                              drop_rate_prompt=float(default("drop_rate_prompt")),
                              amp=False if amp_first else True)  # fmt: skip


def script_flags(source: Path, kind: str) -> dict[str, float]:
    name = {"adapter": "Adapter/VTAB/slurm_train_adapter_vtab.sh", "lora": "LoRA/VTAB/slurm_train_lora_vtab.sh"}[kind]
    return flags_of(source / "configs" / name)


def flags_of(script: Path) -> dict[str, float]:
    """The lr, weight decay, batch size and epochs a NOAH training script passes."""
    text = script.read_text()
    lr = re.search(r"for LR in ([\d.e-]+)", text).group(1)
    wd = re.search(r"WEIGHT_DECAY=([\d.e-]+)", text).group(1)
    return {"lr": float(lr), "weight_decay": float(wd), "batch_size": int(re.search(r"--batch-size=(\d+)", text).group(1)),
            "epochs": int(re.search(r"--epochs=(\d+)", text).group(1))}  # fmt: skip


def their_lrs(args: argparse.Namespace, lr: float, epochs: int) -> list[float]:
    """supernet_train_prompt.py: create_scheduler(args); `for epoch in range(args.epochs)`: train, step(epoch)."""
    from timm.scheduler import create_scheduler

    args = argparse.Namespace(**vars(args), epochs=epochs, lr=lr)
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    scheduler, _ = create_scheduler(args, optimizer)
    lrs = []
    for epoch in range(epochs):
        lrs.append(optimizer.param_groups[0]["lr"])
        scheduler.step(epoch)
    return lrs


def check_recipe(report: Report, source: Path, kind: str) -> None:
    import yaml

    method = _method(kind)
    config = yaml.safe_load((source / "experiments" / ("Adapter" if kind == "adapter" else "LoRA") /
                             f"ViT-B_prompt_{kind}_8.yaml").read_text())  # fmt: skip
    dims = config["RETRAIN"]["ADAPTER_DIM" if kind == "adapter" else "LORA_DIM"]
    rank = Adapter().dim if kind == "adapter" else LoRAQKV().rank
    report.check(f"{method}: rank / bottleneck in every layer vs the retrain config", f"{rank} vs {sorted(set(dims))}",
                 "equal", set(dims) == {rank})  # fmt: skip
    defaults, flags = their_defaults(source), script_flags(source, kind)
    ours = paper_config(method, "vtab1k", "cifar")
    dropout = Adapter().dropout if kind == "adapter" else LoRAQKV().dropout
    theirs_dropout = defaults.drop_rate_adapter if kind == "adapter" else defaults.drop_rate_LoRA
    mine = (ours.lr, ours.weight_decay, ours.batch_size, ours.total_epochs, ours.min_lr, ours.warmup_lr,
            ours.warmup_epochs, ours.drop_path, dropout)  # fmt: skip
    their = (flags["lr"], flags["weight_decay"], flags["batch_size"], flags["epochs"], defaults.min_lr,
             defaults.warmup_lr, defaults.warmup_epochs, defaults.drop_path, theirs_dropout)  # fmt: skip
    report.check(f"{method}: lr, wd, batch, epochs run, min / warm-up lr, warm-up, drop path, module dropout",
                 "equal" if mine == their else f"ours {mine} vs theirs {their}", "equal", mine == their)  # fmt: skip
    difference = max_relative(lr_per_epoch(ours), their_lrs(defaults, flags["lr"], flags["epochs"]))
    report.check(f"{method}: lr of every epoch (paper recipe vs their scheduler and loop), max relative difference",
                 difference, "1e-9", difference <= 1e-9)  # fmt: skip
    report.check(f"{method}: precision (their amp default) and head init (reset_classifier)",
                 f"{ours.precision}, {ours.head_init}", f"{'fp16' if defaults.amp else 'fp32'}, trunc_normal",
                 (ours.precision, ours.head_init) == ("fp16" if defaults.amp else "fp32", "trunc_normal"))  # fmt: skip


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], CLONE, COMMIT)
    install_shims()
    commit = source_commit(args.source)
    report = Report("NOAH's baselines (Zhang et al., 2022): `adapter` (Adapter-8), `lora_qkv` (LoRA-8), "
                    "`--protocol paper`", source_link(CLONE, COMMIT, commit),
                    "model/supernet_vision_transformer_timm.py, model/module/adapter_super.py, "
                    "experiments/{Adapter,LoRA}/ViT-B_prompt_*_8.yaml, configs/{Adapter,LoRA}/VTAB/*.sh, "
                    "supernet_train_prompt.py (defaults)")  # fmt: skip
    for kind in ("adapter", "lora"):
        check_module(report, kind)
        check_init(report, kind)
        check_recipe(report, args.source, kind)
    finish(report, args)


if __name__ == "__main__":
    main()
