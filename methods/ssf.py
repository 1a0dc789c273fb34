"""SSF: Scaling & Shifting your Features (Lian et al., NeurIPS 2022)."""

from __future__ import annotations

import dataclasses

from torch import nn

from ._fold import wrap
from ._registry import register_method
from ._scale_shift import SSFWrapper, block_linear_paths, embed_and_norm_paths
from .base import Method, freeze_all


@register_method("ssf")
@dataclasses.dataclass
class SSF(Method):
    """Scaling & Shifting Features (Lian et al., NeurIPS 2022, Eq. 1: y = γ ⊙ x + β).

    Placement: one (γ, β) pair per output channel after every block's qkv, attention proj, fc1,
    fc2, norm1 and norm2, after the patch-embedding conv and after the final LayerNorm, as SSF's
    released code (dongzelian/SSF, models/vision_transformer.py, `tuning_mode == 'ssf'`).
    Init: γ ~ N(1, 0.02), β ~ N(0, 0.02) (their `init_ssf_scale_shift`).
    Trainable: the pairs and the head (205,824 + head on ViT-B/16). Weight decay: the base rule
    (1-D parameters get none), as timm's optimizer factory that SSF's training script uses.
    Merge: each pair folds into the layer before it, W' = diag(γ) W, b' = γ ⊙ b + β (for a
    LayerNorm its affine weight and bias), giving a plain timm ViT.
    """

    summary = "SSF: per-channel scale and shift after every linear, norm and the patch embedding"
    mergeable = True

    def apply(self, model: nn.Module) -> None:
        freeze_all(model)
        for path in embed_and_norm_paths(model) + block_linear_paths(model):
            wrap(model, path, SSFWrapper)
