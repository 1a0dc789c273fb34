"""peftbench's `adaptformer` run beside AdaptFormer's released code.

    git clone https://github.com/ShoufaChen/AdaptFormer && git -C AdaptFormer checkout 6967d676c1a5e5a11be2e2768a6e5c604bb043ed
    pip install easydict
    python tools/faithfulness/adaptformer.py --source AdaptFormer [--out adaptformer.md]

Their modules run unchanged: models/vit_image.py (`VisionTransformer`), models/custom_modules.py
(`Block` with `ffn_option="parallel"`), models/adapter.py, built with main_image.py's tuning_config
(layer norm option "none", init "lora", scalar "0.1", ffn_num 64). Checks at a small width with the
same frozen weights and trainable values: logits and every gradient in fp64 (eval mode), the training
forward with drop path 0.5 (where the adapter's place relative to the drop path shows), the trainable
count, and the adapter's init. AdaptFormer has no VTAB-1k recipe (`--protocol paper` refuses it).
"""

from __future__ import annotations

import torch
from _common import Report, finish, logits_then_backward, max_abs, parity_inputs, parse_args, source_commit, source_link
from scipy import stats
from timm.models.vision_transformer import VisionTransformer

from peftbench import backbone
from peftbench.api import adapt
from peftbench.methods.adapter import AdaptFormer

CLONE, COMMIT = "https://github.com/ShoufaChen/AdaptFormer", "6967d676c1a5e5a11be2e2768a6e5c604bb043ed"
WIDTH, DEPTH, HEADS, IMAGE, PATCH, CLASSES, BOTTLENECK = 64, 2, 2, 32, 4, 10, 16


def models(drop_path: float = 0.0, width: int = WIDTH, depth: int = DEPTH, seed: int = 0):
    from easydict import EasyDict
    from models.vit_image import VisionTransformer as TheirViT

    torch.manual_seed(seed)
    ours = VisionTransformer(img_size=IMAGE, patch_size=PATCH, embed_dim=width, depth=depth, num_heads=HEADS,
                             mlp_ratio=2.0, num_classes=CLASSES, drop_path_rate=drop_path)  # fmt: skip
    backbone.reset_head(ours, CLASSES)
    adapt(ours, AdaptFormer(dim=BOTTLENECK))
    config = EasyDict(ffn_adapt=True, ffn_option="parallel", ffn_adapter_layernorm_option="none",
                      ffn_adapter_init_option="lora", ffn_adapter_scalar="0.1", ffn_num=BOTTLENECK, d_model=width,
                      vpt_on=False, vpt_num=0)  # main_image.py's tuning_config  # fmt: skip
    torch.manual_seed(seed + 1)
    theirs = TheirViT(img_size=IMAGE, patch_size=PATCH, embed_dim=width, depth=depth, num_heads=HEADS, mlp_ratio=2,
                      qkv_bias=True, num_classes=CLASSES, drop_path_rate=drop_path, tuning_config=config)  # fmt: skip
    for name, p in theirs.named_parameters():  # main_image.py: only the adapters and the head train
        p.requires_grad_("adaptmlp" in name or "head" in name)
    return ours, theirs


def their_name(name: str) -> str:
    for ours, theirs in ((".mlp.fc", ".fc"), (".norm2.norm.", ".norm2."), (".drop_path2.adapter.down", ".adaptmlp.down_proj"),
                         (".drop_path2.adapter.up", ".adaptmlp.up_proj")):  # fmt: skip
        name = name.replace(ours, theirs)
    return name


def pairs(ours, theirs):
    """(our name, our tensor, their tensor); timm's fused qkv rows are their q_proj, k_proj, v_proj."""
    mine, their, out = dict(ours.named_parameters()), dict(theirs.named_parameters()), []
    for name, p in mine.items():
        if ".attn.qkv." in name:
            rows = p.shape[0] // 3
            for g, proj in enumerate(("q_proj", "k_proj", "v_proj")):
                out.append((name, p[g * rows : (g + 1) * rows], their[name.replace("qkv", proj)]))
        else:
            out.append((name, p, their[their_name(name)]))
    return out


@torch.no_grad()
def share_values(ours, theirs) -> None:
    generator = torch.Generator().manual_seed(7)
    for _, mine, their in pairs(ours, theirs):
        if mine.requires_grad:
            mine.copy_(torch.randn(mine.shape, generator=generator) * 0.05)
        their.copy_(mine)


def check_module(report: Report) -> None:
    ours, theirs = models()
    share_values(ours, theirs)
    ours, theirs = ours.double().eval(), theirs.double().eval()
    logits_then_backward(report, ours, theirs, IMAGE, "")
    trainable = [(n, m, t) for n, m, t in pairs(ours, theirs) if m.requires_grad]
    worst = max(max_abs(m.grad, t.grad) for _, m, t in trainable)
    report.check(f"gradients of all {len(trainable)} trainable tensors, fp64, max abs difference", worst, "1e-10",
                 worst <= 1e-10)  # fmt: skip
    counts = [sum(p.numel() for p in model.parameters() if p.requires_grad) for model in (ours, theirs)]
    same = all(m.requires_grad == t.requires_grad for _, m, t in pairs(ours, theirs))
    report.check("trainable parameters (same tensors; count ours / theirs)", f"{counts[0]:,} / {counts[1]:,}", "equal",
                 same and counts[0] == counts[1])  # fmt: skip


def check_drop_path(report: Report) -> None:
    """Training mode, drop path 0.5 (adapter dropout 0, so that both draw the same drop-path masks in the
    same order): the outputs agree only if the adapter joins after the MLP branch's drop path."""
    ours, theirs = models(drop_path=0.5)
    share_values(ours, theirs)
    ours, theirs = ours.double().train(), theirs.double().train()
    for block in ours.blocks:
        block.drop_path2.adapter.dropout.p = 0.0
    for block in theirs.blocks:
        block.adaptmlp.dropout = 0.0
    x = parity_inputs(IMAGE)
    torch.manual_seed(123)
    mine = ours(x)
    torch.manual_seed(123)
    their = theirs(x)
    difference = max_abs(mine, their)
    report.check("training forward with drop path 0.5 (same masks), fp64, max abs difference", difference, "1e-10",
                 difference <= 1e-10)  # fmt: skip


def check_init(report: Report) -> None:
    ours, theirs = models(width=256, depth=2, seed=11)
    found = [(m, t) for n, m, t in pairs(ours, theirs) if n.endswith("adapter.down.weight")]
    a = torch.cat([m.detach().flatten() for m, _ in found])
    b = torch.cat([t.detach().flatten() for _, t in found])
    p_value = stats.ks_2samp(a.numpy(), b.numpy()).pvalue
    report.check(f"init of the down projections ({a.numel():,} values): two-sample KS p-value", float(p_value), "> 0.01",
                 p_value > 0.01)  # fmt: skip
    zeros = all(not m.any() and not t.any() for n, m, t in pairs(ours, theirs)
                if n.endswith(("adapter.up.weight", "adapter.up.bias", "adapter.down.bias")))  # fmt: skip
    report.check(
        "init of the up projection and both biases: zero on both sides", "yes" if zeros else "no", "yes", zeros
    )


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], CLONE, COMMIT)
    commit = source_commit(args.source)
    report = Report("AdaptFormer (Chen et al., NeurIPS 2022): `adaptformer`",
                    source_link(CLONE, COMMIT, commit),
                    "models/vit_image.py, models/custom_modules.py, models/adapter.py, main_image.py (tuning_config)")  # fmt: skip
    check_module(report)
    check_drop_path(report)
    check_init(report)
    finish(report, args)


if __name__ == "__main__":
    main()
