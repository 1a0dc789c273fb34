"""peftbench's `repadapter` and its `--protocol paper` recipe, run beside RepAdapter's released code.

    git clone https://github.com/luogen1996/RepAdapter && git -C RepAdapter checkout 360992fc2a36f069fd168754f14bc1986d869a8f
    python tools/faithfulness/repadapter.py --source RepAdapter [--out repadapter.md]

Their module runs unchanged: repadapter.py (`RepAdapter`, `set_RepAdapter`, `forward_vit_block_adapter`,
`set_RepWeight`), which hard-codes width 768 for a ViT, so the comparison model is a ViT of width 768 at
depth 2 (32 px images). Checks: logits and every gradient in fp64 for `repblock` and `repattn`, the
training forward with drop path 0.5 (their dropout draws its masks in the transposed layout of their
Conv1d, so it is set to 0 on both sides there; the same rate in the same place otherwise), the merged
model against their re-parameterisation (`set_RepWeight` on their model, plain forward restored), the
trainable count on ViT-B/16 (their rule: names with "adapter" or "head"), inits, and the recipe (per-task
scale against configs/repblock/, the lr of every epoch against train.py's scheduler and loop).
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
    parity_inputs,
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
from peftbench.methods.repadapter import RepAdapter
from peftbench.schedules import lr_per_epoch
from peftbench.settings import resolve
from peftbench.suites import get_suite
from peftbench.sweeps.paper_settings import published

CLONE, COMMIT = "https://github.com/luogen1996/RepAdapter", "360992fc2a36f069fd168754f14bc1986d869a8f"
CLASSES, IMAGE = 10, 32
PLACEMENT = {"repblock": "block", "repattn": "attn"}
warnings.filterwarnings("ignore")


def models(
    module, method: str, scale: float, depth: int = 2, image: int = IMAGE, drop_path: float = 0.0, seed: int = 0
):
    torch.manual_seed(seed)
    plain = VisionTransformer(img_size=image, patch_size=16 if image == 224 else 4, embed_dim=768, depth=depth,
                              num_heads=12, num_classes=CLASSES, drop_path_rate=drop_path)  # fmt: skip
    theirs = copy.deepcopy(plain)
    torch.manual_seed(seed + 1)
    module.set_RepAdapter(theirs, method, dim=8, s=scale)
    for name, p in theirs.named_parameters():  # train.py: only names with "adapter" or "head" train
        p.requires_grad_("adapter" in name or "head" in name)
    ours = copy.deepcopy(plain)
    torch.manual_seed(seed + 2)
    adapt(ours, RepAdapter(scale=scale, placement=PLACEMENT[method]))
    return ours, theirs


def their_name(name: str) -> str:
    for mine, theirs in ((".attn.qkv.linear.", ".attn.qkv."), (".mlp.fc1.linear.", ".mlp.fc1."),
                         (".attn.qkv.down.", ".adapter_attn.conv_A."), (".mlp.fc1.down.", ".adapter_mlp.conv_A."),
                         (".attn.qkv.up_", ".adapter_attn.conv_B."), (".mlp.fc1.up_", ".adapter_mlp.conv_B.")):  # fmt: skip
        name = name.replace(mine, theirs)
    return name


def pairs(ours, theirs):
    """(our name, our tensor, theirs viewed in our shape): their Conv1d weights carry a trailing 1."""
    their = dict(theirs.named_parameters())
    return [(n, p, their[their_name(n)]) for n, p in ours.named_parameters()]


def same_shape(theirs: torch.Tensor) -> torch.Tensor:
    return theirs.squeeze(-1) if theirs.ndim == 3 else theirs


def check_method(report: Report, module, method: str) -> None:
    ours, theirs = models(module, method, 0.7)
    share_values(pairs(ours, theirs))
    ours, theirs = ours.double().eval(), theirs.double().eval()
    logits_then_backward(report, ours, theirs, IMAGE, f"{method}: ")
    trainable = [(n, m, t) for n, m, t in pairs(ours, theirs) if m.requires_grad]
    worst = max(max_abs(m.grad, same_shape(t.grad)) for _, m, t in trainable)
    report.check(f"{method}: gradients of all {len(trainable)} trainable tensors, fp64, max abs difference", worst,
                 "1e-10", worst <= 1e-10)  # fmt: skip
    x = parity_inputs(IMAGE)
    with torch.no_grad():
        merged = get_method("repadapter")(placement=PLACEMENT[method]).merge(ours)
        their_merged = copy.deepcopy(theirs)
        for block in their_merged.blocks:
            del block.forward  # their test.py builds with set_forward=False: timm's own Block.forward
        module.set_RepWeight(their_merged, method, dim=8, s=0.7)
        plain = all(type(m) is torch.nn.Linear for m in (b.attn.qkv for b in merged.blocks))
        difference = max_abs(merged(x), their_merged(x))
        to_unmerged = max_abs(merged(x), ours(x))
    report.check(f"{method}: merged (a plain timm ViT: {plain}) vs their set_RepWeight model, fp64 logits, max abs "
                 "difference", difference, "1e-10", plain and difference <= 1e-10)  # fmt: skip
    report.check(f"{method}: merged vs unmerged, fp64 logits, max abs difference", to_unmerged, "1e-10",
                 to_unmerged <= 1e-10)  # fmt: skip


def check_module(report: Report, module) -> None:
    for method in PLACEMENT:
        check_method(report, module, method)
    ours, theirs = models(module, "repblock", 0.7, drop_path=0.5)
    share_values(pairs(ours, theirs))
    ours, theirs = ours.double().train(), theirs.double().train()
    for module_ in [*ours.modules(), *theirs.modules()]:  # see below: the dropout masks cannot be aligned
        if isinstance(module_, torch.nn.Dropout):
            module_.p = 0.0
    x = parity_inputs(IMAGE)
    difference = same_masks_difference(lambda: ours(x), lambda: theirs(x))
    # their Conv1d adapter drops out on (batch, d, tokens), ours on (batch, tokens, d): the same
    # distribution, but one seed gives the two layouts different masks; so the drop path alone here
    report.check("repblock: training forward with drop path 0.5 (same masks; dropout 0 on both sides), fp64, max abs "
                 "difference",
                 difference, "1e-10", difference <= 1e-10)  # fmt: skip
    big_ours, big_theirs = models(module, "repblock", 0.1, depth=12, image=224, seed=5)
    counts = [sum(p.numel() for n, p in m.named_parameters() if p.requires_grad and not n.startswith("head"))
              for m in (big_ours, big_theirs)]  # fmt: skip
    report.check("repblock: trainable parameters on ViT-B/16 without the head (ours / theirs)",
                 f"{counts[0]:,} / {counts[1]:,}", "equal", counts[0] == counts[1])  # fmt: skip
    found = pairs(big_ours, big_theirs)
    a = torch.cat([m.detach().flatten() for n, m, _ in found if n.endswith("down.weight")])
    b = torch.cat([t.detach().flatten() for n, _, t in found if n.endswith("down.weight")])
    p_value = stats.ks_2samp(a.numpy(), b.numpy()).pvalue
    report.check(f"init of A (conv_A, {a.numel():,} values): two-sample KS p-value", float(p_value), "> 0.01",
                 p_value > 0.01)  # fmt: skip
    zeros = all(not m.any() and not t.any() for n, m, t in found if n.endswith(("down.bias", "up_weight", "up_bias")))
    report.check("init of B and both biases: zero on both sides", "yes" if zeros else "no", "yes", zeros)


def check_recipe(report: Report, source: Path) -> None:
    vtab, differ, worst = get_suite("vtab1k"), [], 0.0
    for task in vtab.tasks:
        config = yaml.safe_load((source / "configs" / "repblock" / f"{task.name}.yaml").read_text())
        train, options = resolve(get_method("repadapter"), vtab.defaults, published("repadapter", vtab, task).settings)
        chosen = RepAdapter(**options)
        if (chosen.scale, chosen.dim, chosen.placement) != (config["scale"], 8, "block"):
            differ.append(task.name)
        worst = max(worst, max_relative(lr_per_epoch(train), script_scheduler_lrs(source / "train.py", train.lr)))
    report.check("per-task scale vs configs/repblock/<task>.yaml (dim 8, repblock)",
                 agreement(differ, len(vtab.tasks)),
                 "all", not differ)  # fmt: skip
    report.check(f"lr of every epoch on all {len(vtab.tasks)} tasks vs their scheduler and loop, max relative difference",
                 worst, "1e-9", worst <= 1e-9)  # fmt: skip


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], CLONE, COMMIT)
    commit = source_commit(args.source)
    report = Report("RepAdapter (Luo et al., 2023): `repadapter`, `--protocol paper`",
                    source_link(CLONE, COMMIT, commit),
                    "repadapter.py, train.py, configs/repblock/*.yaml")  # fmt: skip
    sys.path.insert(0, str(args.source))
    import repadapter as module

    check_module(report, module)
    check_recipe(report, args.source)
    finish(report, args)


if __name__ == "__main__":
    main()
