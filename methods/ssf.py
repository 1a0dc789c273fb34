"""SSF: Scaling & Shifting your Features (Lian et al., NeurIPS 2022)."""

from __future__ import annotations

import dataclasses

from torch import nn

from peftbench.anatomy import attentions, block_paths, family_of, mlp_linear_paths, patch_embed_path

from ._fold import wrap
from ._registry import register_method
from ._scale_shift import ScaleShift, SSFWrapper, block_norm_pair_paths, foldable_paths
from .base import Method, freeze_all

CONVNEXT_POOLED_PAIR = "norm_pre"  # ConvNeXt's pair on the last stage's output, where timm keeps an Identity


def ssf_paths(model: nn.Module) -> list[str]:
    """The layers SSF's released code follows with a (γ, β) pair, per family (dongzelian/SSF@e94e0e7):
    vit (models/vision_transformer.py): the patch-embedding conv, every block's norm1, qkv, proj, norm2,
    fc1, fc2 and the final `norm` (an average-pooled model's `fc_norm` gets none);
    swin (models/swin_transformer.py): the same plus the patch-embedding norm; its PatchMerging code
    is never reached (BasicLayer passes the list of modes, which is not 'ssf'), so merging layers get none;
    convnext (models/convnext.py): the stem conv and norm, every block's conv_dw, norm, fc1, fc2 (the
    downsample layers get none, as in Swin); the pooled pair is added by `SSF.apply`;
    eva (no SSF release): the ViT rule over Eva's parts, i.e. separate q, k, v, and SwiGLU's fc1_g, fc1_x, inner norm, fc2."""
    family = family_of(model)
    if family == "convnext":
        per_block = [(p, [f"{p}.conv_dw", f"{p}.norm", f"{p}.mlp.fc1", f"{p}.mlp.fc2"]) for p in block_paths(model)]
        return ["stem.0", "stem.1"] + [path for _, paths in per_block for path in paths]
    linears = {a.proj.rsplit(".attn.", 1)[0]: [*a.inputs, a.proj] for a in attentions(model)}
    mlps: dict[str, list[str]] = {}
    for path in mlp_linear_paths(model):
        mlps.setdefault(path.rsplit(".mlp.", 1)[0], []).append(path)
    paths = [patch_embed_path(model)] + foldable_paths(model, ["patch_embed.norm"]) + block_norm_pair_paths(model)
    return paths + [path for block in block_paths(model) for path in linears[block] + mlps[block]]


@register_method("ssf")
@dataclasses.dataclass
class SSF(Method):
    """Scaling & Shifting Features (Lian et al., NeurIPS 2022, Eq. 1: y = γ ⊙ x + β).

    Placement: one (γ, β) pair per output channel after every block's qkv, attention proj, fc1,
    fc2, norm1 and norm2, after the patch-embedding conv and after the final LayerNorm, as SSF's
    released code (dongzelian/SSF, models/vision_transformer.py, `tuning_mode == 'ssf'`); on Swin
    and ConvNeXt as their models/swin_transformer.py and models/convnext.py run (`ssf_paths`).
    Init: γ ~ N(1, 0.02), β ~ N(0, 0.02) (their `init_ssf_scale_shift`).
    Trainable: the pairs and the head: 205,824 + head on ViT-B/16, 544,768 on ViT-L/16, 267,264 on
    Swin-B, 255,232 on ConvNeXt-B, whose `head.norm` also trains (their optimizer's rule trains every
    name holding "head.", 2,048 more). Weight decay: the base rule (1-D parameters get none), as timm's
    optimizer factory that SSF's training script uses.
    Merge: each pair folds into the layer before it, W' = diag(γ) W, b' = γ ⊙ b + β (for a
    LayerNorm its affine weight and bias), giving a plain timm model. ConvNeXt's pair on the last
    stage's output (their `ssf_scale_1` on `norm_pre(x)`, before pooling and `head.norm`) precedes a
    LayerNorm, so it cannot fold: the merged ConvNeXt keeps it as `norm_pre` (a `ScaleShift`).
    """

    summary = "SSF: per-channel scale and shift after every linear, norm and the patch embedding"
    mergeable = True
    families = ("vit", "swin", "convnext", "eva")

    def apply(self, model: nn.Module) -> None:
        freeze_all(model)
        for path in ssf_paths(model):
            wrap(model, path, SSFWrapper)
        if family_of(model) == "convnext":
            like = model.head.fc.weight
            width = model.head.norm.normalized_shape[0]
            model.norm_pre = ScaleShift(width, channel_dim=1, device=like.device, dtype=like.dtype)
            model.head.norm.requires_grad_(True)
