"""peftbench's `lora` (q and v of every block) run beside Hugging Face peft's LoRA.

    pip install peft          # the released library; no checkout needed
    python tools/faithfulness/peft_lora.py [--out peft_lora.md]

timm fuses q, k and v into one `attn.qkv` Linear, which peft can only adapt whole; the reference is
therefore the same ViT with each qkv split into three Linears `q`, `k`, `v` (the same rows, the same
function), to which peft's `get_peft_model(LoraConfig(r, lora_alpha, target_modules=q and v,
lora_dropout))` is applied unchanged. Checks at a small width with the same frozen weights and
the same A and B: logits and every gradient in fp64, the training forward with dropout 0.5 (peft's q
and v layers draw a mask each), trainable counts, the init of A and B, and merged == unmerged.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from _common import Report, logits_then_backward, max_abs, same_masks_difference
from scipy import stats
from timm.models.vision_transformer import VisionTransformer
from torch import nn

import peftbench
from peftbench import backbone
from peftbench.api import adapt
from peftbench.methods.lora import LoRA

WIDTH, DEPTH, HEADS, IMAGE, PATCH, CLASSES, RANK, ALPHA = 64, 2, 2, 32, 4, 10, 8, 16.0


class SplitQKV(nn.Module):
    """timm's fused qkv as three Linears q, k, v (rows 0:D, D:2D, 2D:3D), outputs concatenated."""

    def __init__(self, fused: nn.Linear):
        super().__init__()
        width = fused.out_features // 3
        self.q, self.k, self.v = (nn.Linear(fused.in_features, width) for _ in range(3))
        with torch.no_grad():
            for g, layer in enumerate((self.q, self.k, self.v)):
                layer.weight.copy_(fused.weight[g * width : (g + 1) * width])
                layer.bias.copy_(fused.bias[g * width : (g + 1) * width])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.q(x), self.k(x), self.v(x)), dim=-1)


def models(dropout: float = 0.0, width: int = WIDTH, depth: int = DEPTH, seed: int = 0):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    plain = VisionTransformer(img_size=IMAGE, patch_size=PATCH, embed_dim=width, depth=depth, num_heads=HEADS,
                              mlp_ratio=2.0, num_classes=CLASSES)  # fmt: skip
    backbone.reset_head(plain, CLASSES)
    reference = VisionTransformer(img_size=IMAGE, patch_size=PATCH, embed_dim=width, depth=depth, num_heads=HEADS,
                                  mlp_ratio=2.0, num_classes=CLASSES)  # fmt: skip
    reference.load_state_dict(plain.state_dict())
    for block in reference.blocks:
        block.attn.qkv = SplitQKV(block.attn.qkv)
    torch.manual_seed(seed + 1)
    config = LoraConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=dropout, target_modules=r".*\.attn\.qkv\.(q|v)",
                        modules_to_save=["head"])  # fmt: skip
    theirs = get_peft_model(reference, config)
    adapt(plain, LoRA(rank=RANK, alpha=ALPHA, dropout=dropout))
    return plain, theirs


def lora_pairs(ours, theirs):
    """(label, our A or B, their A or B) for q and v of every block."""
    out = []
    for i, block in enumerate(ours.blocks):
        split = theirs.base_model.model.blocks[i].attn.qkv
        for p in ("q", "v"):
            layer = getattr(split, p)
            out += [(f"block {i} {p} A", block.attn.qkv.lora_A[p], layer.lora_A["default"].weight),
                    (f"block {i} {p} B", block.attn.qkv.lora_B[p], layer.lora_B["default"].weight)]  # fmt: skip
    return out


@torch.no_grad()
def share_values(ours, theirs) -> None:
    generator = torch.Generator().manual_seed(7)
    for _, mine, their in lora_pairs(ours, theirs):
        mine.copy_(torch.randn(mine.shape, generator=generator) * 0.05)
        their.copy_(mine)
    head = theirs.base_model.model.head.modules_to_save["default"]
    head.weight.copy_(torch.randn(head.weight.shape, generator=generator) * 0.05)
    ours.head.weight.copy_(head.weight)


def check(report: Report) -> None:
    ours, theirs = models()
    share_values(ours, theirs)
    ours, theirs = ours.double().eval(), theirs.double().eval()
    x = logits_then_backward(report, ours, theirs, IMAGE, "")
    pairs = lora_pairs(ours, theirs)
    worst = max(max_abs(m.grad, t.grad) for _, m, t in pairs)
    report.check(f"gradients of all {len(pairs)} A and B matrices, fp64, max abs difference", worst, "1e-10",
                 worst <= 1e-10)  # fmt: skip
    counts = [sum(p.numel() for p in model.parameters() if p.requires_grad) for model in (ours, theirs)]
    report.check("trainable parameters, head included (ours / peft's)", f"{counts[0]:,} / {counts[1]:,}", "equal",
                 counts[0] == counts[1])  # fmt: skip
    merged = peftbench.merge(ours)
    reference = theirs.merge_and_unload()
    difference = max(max_abs(merged(x), reference(x)), max_abs(merged(x), ours(x)))
    report.check("merged into a plain timm ViT (ours) vs peft's merge_and_unload, and vs unmerged, fp64", difference,
                 "1e-10", difference <= 1e-10)  # fmt: skip

    ours, theirs = models(dropout=0.5)
    share_values(ours, theirs)
    ours, theirs = ours.double().train(), theirs.double().train()
    difference = same_masks_difference(lambda: ours(x), lambda: theirs(x))
    report.check("training forward with lora_dropout 0.5 (q and v draw their own masks), fp64, max abs difference",
                 difference, "1e-10", difference <= 1e-10)  # fmt: skip

    ours, theirs = models(width=256, depth=2, seed=11)
    for which in ("A", "B"):
        a = torch.cat([m.detach().flatten() for label, m, _ in lora_pairs(ours, theirs) if label.endswith(which)])
        b = torch.cat([t.detach().flatten() for label, _, t in lora_pairs(ours, theirs) if label.endswith(which)])
        if which == "B":
            report.check("init of B: zero on both sides", "yes" if not a.any() and not b.any() else "no", "yes",
                         not a.any() and not b.any())  # fmt: skip
            continue
        p_value = stats.ks_2samp(a.numpy(), b.numpy()).pvalue
        report.check(f"init of A ({a.numel():,} values): two-sample KS p-value", float(p_value), "> 0.01",
                     p_value > 0.01)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="also write the Markdown section to this file")
    args = parser.parse_args()
    import peft

    report = Report("LoRA (Hu et al., ICLR 2022): `lora` against Hugging Face peft",
                    f"[huggingface/peft](https://github.com/huggingface/peft) {peft.__version__} (PyPI)",
                    "peft.tuners.lora (LoraConfig, get_peft_model, merge_and_unload)")  # fmt: skip
    check(report)
    command = "python tools/faithfulness/peft_lora.py" + (f" --out {args.out}" if args.out else "")
    text = report.markdown(command)
    print("\n" + text)
    if args.out:
        args.out.write_text(text)
    sys.exit(0 if report.faithful else 1)


if __name__ == "__main__":
    main()
