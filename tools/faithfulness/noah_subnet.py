"""peftbench's `noah` and its `--protocol paper` recipe, run beside NOAH's released code retraining a
searched subnet (VPT prompts, fused-qkv LoRA and Adapter with per-block widths).

    git clone https://github.com/ZhangYuanhan-AI/NOAH && git -C NOAH checkout e9c55f360be4f7f1133a08bf84f86f0309e98f8c
    python tools/faithfulness/noah_subnet.py --source NOAH [--out noah_subnet.md]

Their model imports after the two shims noah.py describes and runs unchanged:
model/supernet_vision_transformer_timm.py (`VisionTransformer` built with the supernet widths of
experiments/NOAH/subnet/VTAB/*.yaml, `reset_classifier`, then `set_sample_config` with the yaml's
RETRAIN widths, as supernet_train_prompt.py --mode=retrain does). Checks, on small models with the
same frozen weights and trainable values: fp64 logits and every gradient, for a released subnet
(CIFAR-100's, 12 blocks) and a made-up 4-block one with zero widths (their prompt hand-over rule);
that no parameter of theirs outside the subnet gets a gradient; trainable counts at ViT-B/16 for all
19 tasks against their `get_sampled_params_numel`; weight-decay groups; init distributions; the 19
per-task subnets; and the recipe (retrain script, parser defaults, lr of every epoch).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import torch
import yaml
from _common import (
    Report,
    compare_inits,
    finish,
    max_abs,
    max_relative,
    paper_config,
    parity_inputs,
    parse_args,
    same_masks_difference,
    source_commit,
    source_link,
)
from noah import install_shims, their_defaults, their_lrs
from timm.models.vision_transformer import VisionTransformer

from peftbench import backbone
from peftbench.api import adapt
from peftbench.methods.noah import NOAH, SUPERNET_PROMPT_TOKENS
from peftbench.schedules import lr_per_epoch
from peftbench.suites import get_suite
from peftbench.sweeps.paper_settings import published

CLONE, COMMIT = "https://github.com/ZhangYuanhan-AI/NOAH", "e9c55f360be4f7f1133a08bf84f86f0309e98f8c"
WIDTH, HEADS, IMAGE, PATCH, CLASSES = 64, 2, 32, 4, 10
THEIR_TASK = {"cifar": "cifar100", "oxford_iiit_pet": "oxford_pet"}
MADE_UP = {
    "visual_prompt_dim": [3, 0, 2, 4],
    "lora_dim": [2, 1, 0, 3],
    "adapter_dim": [1, 0, 4, 2],
    "prefix_dim": [0] * 4,
}
warnings.filterwarnings("ignore")


def their_subnet(source: Path, task: str) -> tuple[dict, dict]:
    """(SUPERNET, RETRAIN widths as set_sample_config takes them) of a task's released yaml."""
    path = source / "experiments/NOAH/subnet/VTAB" / f"ViT-B_prompt_{THEIR_TASK.get(task, task)}.yaml"
    config = yaml.safe_load(path.read_text())
    retrain = config["RETRAIN"]
    keys = {
        "visual_prompt_dim": "VISUAL_PROMPT_DIM",
        "lora_dim": "LORA_DIM",
        "adapter_dim": "ADAPTER_DIM",
        "prefix_dim": "PREFIX_DIM",
    }
    return config["SUPERNET"], {ours: retrain[theirs] for ours, theirs in keys.items()}


def theirs_model(supernet: dict, width: int, depth: int, heads: int = HEADS, image: int = IMAGE, patch: int = PATCH,
                 seed: int = 1, drop_path: float = 0.0):  # fmt: skip
    from model.supernet_vision_transformer_timm import VisionTransformer as TheirViT

    torch.manual_seed(seed)
    model = TheirViT(img_size=image, patch_size=patch, embed_dim=width, depth=depth, num_heads=heads,
                     mlp_ratio=2.0 if width == WIDTH else 4.0, super_prompt_tuning_dim=supernet["VISUAL_PROMPT_DIM"],
                     super_LoRA_dim=supernet["LORA_DIM"], super_adapter_dim=supernet["ADAPTER_DIM"],
                     super_prefix_dim=supernet["PREFIX_DIM"], drop_rate_LoRA=0.1, drop_rate_prompt=0.1,
                     drop_rate_adapter=0.1, drop_path_rate=drop_path)  # fmt: skip
    model.reset_classifier(CLASSES)
    return model


def ours_model(widths: dict, width: int, depth: int, seed: int = 0, drop_path: float = 0.0):
    torch.manual_seed(seed)
    model = VisionTransformer(img_size=IMAGE, patch_size=PATCH, embed_dim=width, depth=depth, num_heads=HEADS,
                              mlp_ratio=2.0, num_classes=CLASSES, drop_path_rate=drop_path)  # fmt: skip
    backbone.reset_head(model, CLASSES)
    backbone.init_head(model, paper_config("noah", "vtab1k", "cifar").head_init)
    adapt(model, method_for(widths))
    return model


def method_for(widths: dict) -> NOAH:
    text = {k: " ".join(map(str, v)) for k, v in widths.items()}
    return NOAH(prompt_lens=text["visual_prompt_dim"], lora_ranks=text["lora_dim"], adapter_dims=text["adapter_dim"])


def their_view(their: dict[str, torch.Tensor], name: str, mine: torch.Tensor) -> torch.Tensor:
    """Their tensor (a slice of a supernet tensor for subnet parameters) in our layout, for `name` of ours."""
    plain = name.replace(".block.", ".").replace(".base_layer.", ".").replace("norm.inner.", "norm.")
    block = plain.split(".")[1] if plain.startswith("blocks.") else None
    if plain.endswith(".prompts"):
        return their[f"blocks.{block}.visual_prompt_token"][:, : mine.shape[1]]
    if ".attn.qkv.lora_A" in plain:  # ours (in x r), theirs LoRA_a (r_super x in)
        return their[f"blocks.{block}.attn.LoRA_a.weight"][: mine.shape[1]].T
    if ".attn.qkv.lora_B" in plain:  # ours (r x 3D), theirs LoRA_b (3D x r_super)
        return their[f"blocks.{block}.attn.LoRA_b.weight"][:, : mine.shape[0]].T
    if ".drop_path2.adapter.down." in plain:  # ln1 (d_super x D), its bias (d_super)
        return their[plain.replace("drop_path2.adapter.down", "adapter.ln1")][: mine.shape[0]]
    if ".drop_path2.adapter.up.weight" in plain:  # ln2 (D x d_super)
        return their[plain.replace("drop_path2.adapter.up", "adapter.ln2")][:, : mine.shape[1]]
    return their[plain.replace("drop_path2.adapter.up", "adapter.ln2")]


def triples(ours, theirs) -> list[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(our name, our tensor, their view, their whole tensor) for every parameter of ours."""
    their = dict(theirs.named_parameters(remove_duplicate=False))
    whole = {id(p): p for p in their.values()}
    out = []
    for name, mine in ours.named_parameters():
        view = their_view(their, name, mine)
        base = view if view._base is None else view._base
        out.append((name, mine, view, whole.get(id(base), base)))
    return out


def their_grad(name: str, mine: torch.Tensor, theirs) -> torch.Tensor:
    """The gradient of their tensor, sliced as `their_view` slices the tensor."""
    their = {
        n: p.grad if p.grad is not None else torch.zeros_like(p)
        for n, p in theirs.named_parameters(remove_duplicate=False)
    }
    return their_view(their, name, mine)


def check_module(report: Report, label: str, supernet: dict, widths: dict) -> None:
    depth = len(widths["lora_dim"])
    drop_path = paper_config("noah", "vtab1k", "cifar").drop_path
    ours = ours_model(widths, WIDTH, depth, drop_path=drop_path).double()
    theirs = theirs_model(supernet, WIDTH, depth, drop_path=drop_path).double()
    rows = triples(ours, theirs)
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for _, mine, view, _ in rows:
            if mine.requires_grad:
                mine.add_(torch.randn(mine.shape, generator=generator, dtype=mine.dtype) * 0.05)
            view.copy_(mine)
    theirs.set_sample_config(widths)  # after .double(): their sampled weights are views of the parameters
    ours.train(), theirs.train()
    # their forward_features drops out the model-level prompts that block 0 then discards: the same output
    # without it, and without it both sides draw their masks from the random stream in the same order
    theirs.drop_prompt = torch.nn.Identity()
    difference = same_masks_difference(lambda: ours(parity_inputs(IMAGE)), lambda: theirs(parity_inputs(IMAGE)))
    report.check(f"{label}: training forward (prompt, LoRA and adapter dropout 0.1, drop path {drop_path}), same seed, fp64",
                 difference, "1e-10", difference <= 1e-10)  # fmt: skip
    ours.eval(), theirs.eval()
    x, y = parity_inputs(IMAGE), torch.tensor([0, 3, 5, 9])
    difference = max_abs(ours(x), theirs(x))
    report.check(f"{label}: logits, fp64, max abs difference", difference, "1e-10", difference <= 1e-10)
    for model in (ours, theirs):
        torch.nn.functional.cross_entropy(model(x), y).backward()
    trainable = [(n, m) for n, m, _, _ in rows if m.requires_grad]
    worst = max(max_abs(m.grad, their_grad(n, m, theirs)) for n, m in trainable)
    report.check(f"{label}: gradients of all {len(trainable)} trainable tensors, fp64, max abs difference",
                 worst, "1e-10", worst <= 1e-10)  # fmt: skip
    # what of theirs trains but is no slice of ours (model-level prompts, unsampled widths) gets no gradient
    masks = {id(p): torch.zeros_like(p) for p in theirs.parameters()}
    named_masks = {n: masks[id(p)] for n, p in theirs.named_parameters(remove_duplicate=False)}
    for n, m in trainable:
        their_view(named_masks, n, m).fill_(1.0)
    stray = max((p.grad * (1 - masks[id(p)])).abs().max().item() for p in theirs.parameters() if p.grad is not None)
    report.check(f"{label}: their trainable values outside the subnet (model-level prompts, unsampled widths): max abs gradient",
                 stray, "0", stray == 0.0)  # fmt: skip
    from timm.optim import create_optimizer_v2

    no_decay = NOAH().no_weight_decay(ours)
    optimizer = create_optimizer_v2(theirs, "adamw", lr=1e-3, weight_decay=1e-4)
    decayed = {id(p) for g in optimizer.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    split = [(n not in no_decay) == (id(whole) in decayed) for n, m, _, whole in rows if m.requires_grad]
    report.check(f"{label}: weight-decay group of every trainable tensor (ours vs timm's factory on theirs)",
                 f"{sum(split)}/{len(split)}", "all", all(split))  # fmt: skip


def check_counts(report: Report, source: Path) -> None:
    """Trainable counts at ViT-B/16 for every task: ours vs their `get_sampled_params_numel` less the
    model-level prompts (L_0 x D) and their position embedding (100 x D), which no block reads."""
    supernet, _ = their_subnet(source, "cifar")
    theirs = theirs_model(supernet, 768, 12, heads=12, image=224, patch=16)
    vtab, agree, ours_mean, printed_mean = get_suite("vtab1k"), 0, 0.0, 0.0
    for task in vtab.tasks:
        _, widths = their_subnet(source, task.name)
        numel = theirs.get_sampled_params_numel(widths)
        dead = (widths["visual_prompt_dim"][0] + supernet["VISUAL_PROMPT_DIM"]) * 768
        options = published("noah", vtab, task).settings
        method = NOAH(
            prompt_lens=options["prompt_lens"], lora_ranks=options["lora_ranks"], adapter_dims=options["adapter_dims"]
        )
        model = VisionTransformer(num_classes=0)
        adapt(model, method)
        mine = sum(p.numel() for p in model.parameters() if p.requires_grad)
        agree += mine == numel - dead
        ours_mean += mine / len(vtab.tasks)
        printed_mean += numel / len(vtab.tasks)
    report.check("ViT-B/16 trainable counts without head, 19 tasks: ours == their get_sampled_params_numel - dead prompts",
                 f"{agree}/{len(vtab.tasks)}", "all", agree == len(vtab.tasks))  # fmt: skip
    report.check("ViT-B/16 mean over the 19 tasks without head: ours / theirs (their count holds the dead prompts)",
                 f"{ours_mean / 1e6:.3f} M / {printed_mean / 1e6:.3f} M", "reported", None)  # fmt: skip


def check_init(report: Report, source: Path) -> None:
    supernet, _ = their_subnet(source, "cifar")
    widths = {"visual_prompt_dim": [10, 10], "lora_dim": [10, 10], "adapter_dim": [10, 10], "prefix_dim": [0, 0]}
    ours, theirs = ours_model(widths, 256, 2, seed=11), theirs_model(supernet, 256, 2, seed=12)
    theirs.set_sample_config(widths)
    groups: dict[str, tuple[list, list]] = {}
    for name, mine, view, _ in triples(ours, theirs):
        if mine.requires_grad and name != "head.bias":
            kind = ("prompts" if name.endswith("prompts") else "head weight" if name == "head.weight"
                    else "adapter biases" if name.endswith("bias") else "LoRA and adapter weights")  # fmt: skip
            a, b = groups.setdefault(kind, ([], []))
            a.append(mine.detach().flatten())
            b.append(view.detach().flatten())
    compare_inits(report, groups)
    report.check("supernet prompt width the init's fan-in reads (SUPERNET.VISUAL_PROMPT_DIM, all 19 yamls)",
                 f"{SUPERNET_PROMPT_TOKENS} vs {sorted({their_subnet(source, t.name)[0]['VISUAL_PROMPT_DIM'] for t in get_suite('vtab1k').tasks})}",
                 "equal", {their_subnet(source, t.name)[0]["VISUAL_PROMPT_DIM"] for t in get_suite("vtab1k").tasks} == {SUPERNET_PROMPT_TOKENS})  # fmt: skip


def check_recipe(report: Report, source: Path) -> None:
    vtab, same = get_suite("vtab1k"), 0
    for task in vtab.tasks:
        _, widths = their_subnet(source, task.name)
        options = published("noah", vtab, task).settings
        mine = [[int(v) for v in options[k].split()] for k in ("prompt_lens", "lora_ranks", "adapter_dims")]
        same += mine == [widths["visual_prompt_dim"], widths["lora_dim"], widths["adapter_dim"]] and set(
            widths["prefix_dim"]
        ) == {0}
    report.check("per-task subnets (prompt length, LoRA rank, adapter width of every block) vs the RETRAIN yamls",
                 f"{same}/{len(vtab.tasks)}", "all", same == len(vtab.tasks))  # fmt: skip
    text = (source / "configs/NOAH/VTAB/subnet/slurm_retrain_vtab.sh").read_text()
    flags = {"lr": float(re.search(r"for LR in ([\d.e-]+)", text).group(1)),
             "weight_decay": float(re.search(r"WEIGHT_DECAY=([\d.e-]+)", text).group(1)),
             "batch_size": int(re.search(r"--batch-size=(\d+)", text).group(1)),
             "epochs": int(re.search(r"--epochs=(\d+)", text).group(1))}  # fmt: skip
    plain = all(
        f in text for f in ("--mode=retrain", "--no_aug", "--direct_resize", "--mixup=0", "--cutmix=0", "--smoothing=0")
    )
    plain = plain and "--amp" not in text
    report.check("retrain script: --mode=retrain, no --amp, no augmentation, direct resize, no mixup / cutmix / smoothing",
                 "yes" if plain else "no", "yes", plain)  # fmt: skip
    defaults = their_defaults(source)
    ours = paper_config("noah", "vtab1k", "cifar")
    dropout = float(published("noah", vtab, vtab.task("cifar")).settings["dropout"])
    mine = (ours.lr, ours.weight_decay, ours.batch_size, ours.total_epochs, ours.min_lr, ours.warmup_lr,
            ours.warmup_epochs, ours.drop_path, dropout, dropout, dropout)  # fmt: skip
    their = (flags["lr"], flags["weight_decay"], flags["batch_size"], flags["epochs"], defaults.min_lr, defaults.warmup_lr,
             defaults.warmup_epochs, defaults.drop_path, defaults.drop_rate_prompt, defaults.drop_rate_LoRA,
             defaults.drop_rate_adapter)  # fmt: skip
    report.check("lr, wd, batch, epochs run, min / warm-up lr, warm-up, drop path, prompt / LoRA / adapter dropout",
                 "equal" if mine == their else f"ours {mine} vs theirs {their}", "equal", mine == their)  # fmt: skip
    difference = max_relative(lr_per_epoch(ours), their_lrs(defaults, flags["lr"], flags["epochs"]))
    report.check("lr of every epoch (paper recipe vs their scheduler and loop), max relative difference",
                 difference, "1e-9", difference <= 1e-9)  # fmt: skip
    report.check("precision (their amp default) and head init (reset_classifier)", f"{ours.precision}, {ours.head_init}",
                 f"{'fp16' if defaults.amp else 'fp32'}, trunc_normal",
                 (ours.precision, ours.head_init) == ("fp16" if defaults.amp else "fp32", "trunc_normal"))  # fmt: skip


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], CLONE, COMMIT)
    install_shims()
    commit = source_commit(args.source)
    report = Report("NOAH (Zhang et al., 2022): `noah`, the retrained searched subnet, `--protocol paper`",
                    source_link(CLONE, COMMIT, commit),
                    "model/supernet_vision_transformer_timm.py, model/module/adapter_super.py, "
                    "experiments/NOAH/subnet/VTAB/*.yaml, configs/NOAH/VTAB/subnet/slurm_retrain_vtab.sh, "
                    "supernet_train_prompt.py (defaults)")  # fmt: skip
    supernet, cifar = their_subnet(args.source, "cifar")
    check_module(report, "CIFAR-100's subnet (12 blocks)", supernet, cifar)
    check_module(report, "a 4-block subnet with zero widths", supernet, MADE_UP)
    check_counts(report, args.source)
    check_init(report, args.source)
    check_recipe(report, args.source)
    finish(report, args)


if __name__ == "__main__":
    main()
