"""LayerNorm tuning (`ln_tune`) and DiffFit (`difffit`, Xie et al., ICCV 2023), as PETL_Vision builds them."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from ._fold import FoldableWrapper, fold_wrappers
from ._registry import register_method
from .base import Method, freeze_all
from .bitfit import bias_names

# PETL_Vision's defaults (main.py, experiment/config/default_vtab_processed.yml; engine/trainer.py
# steps timm's CosineLRScheduler `step(epoch)` after each epoch); lr and wd are tuned (lr_wd_vtab_processed.yml).
PETL_VISION_DEFAULTS = {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 1e-4, "warmup_lr": 1e-6, "min_lr": 1e-5,
                        "scheduler": "timm-epoch", "drop_path": 0.1}  # fmt: skip


def norm_names(model: nn.Module) -> list[str]:
    """Every LayerNorm's weight and bias (norm1, norm2 of each block, the final norm)."""
    return [f"{path}.{name}" for path, module in model.named_modules() if isinstance(module, nn.LayerNorm)
            for name, _ in module.named_parameters(recurse=False)]  # fmt: skip


@register_method("ln_tune")
@dataclasses.dataclass
class LayerNormTuning(Method):
    """LayerNorm tuning: only the affine weight and bias of every LayerNorm train (and the head).

    As OSU-MLB/PETL_Vision builds it (experiment/build_model.py, `--ln`: every parameter whose name
    holds "norm" trains; in a timm ViT those are exactly the LayerNorms' weights and biases).
    Trainable: 2 D (2 depth + 1) and the head; ViT-B/16: 38,400 without the head.
    Merge: the identity; the model is a plain timm ViT.
    """

    summary = "LayerNorm tuning: only the LayerNorms' affine parameters train"
    mergeable = True
    train_defaults = PETL_VISION_DEFAULTS
    tune_grid = {"lr": (1e-3, 1e-2), "weight_decay": (1e-4, 1e-3)}  # experiment/config/lr_wd_vtab_processed.yml

    def apply(self, model: nn.Module) -> None:
        freeze_all(model)
        for name in norm_names(model):
            model.get_parameter(name).requires_grad_(True)


class ScaledBranch(FoldableWrapper):
    """Replaces a block's drop path: γ ⊙ drop_path(branch), γ per channel, ones at init (DiffFit's
    `difffit_gamma`). At evaluation γ folds into the branch's last Linear (attn.proj, mlp.fc2)."""

    def __init__(self, drop_path: nn.Module, width: int, like: torch.Tensor):
        super().__init__()
        self.drop_path = drop_path
        self.gamma = nn.Parameter(torch.ones(width, device=like.device, dtype=like.dtype))

    def forward(self, branch: torch.Tensor) -> torch.Tensor:
        return self.gamma * self.drop_path(branch)

    def fold(self) -> nn.Module:
        return self.drop_path  # the γ is folded into the branch's Linear by DiffFit.merge first


@register_method("difffit")
@dataclasses.dataclass
class DiffFit(Method):
    """DiffFit (Xie et al., ICCV 2023, Eq. 2, "DiffFit: Unlocking Transferability of Large Diffusion
    Models via Simple Parameter-Efficient Fine-Tuning"): every bias and LayerNorm trains, and each block
    scales its two residual branches by learnable per-channel factors, x ← x + γ₁ ⊙ attn-branch,
    x ← x + γ₂ ⊙ mlp-branch (γ after the branch's drop path, as PETL_Vision's Block.forward:
    `x = self.difffit_gamma1 * x_ft_attn + residual_attn`), γ = 1 at init.
    As OSU-MLB/PETL_Vision builds it (model/block.py `difffit_gamma1/2`; experiment/build_model.py,
    `--difffit`: names holding "bias", "norm" or "difffit" train).
    Trainable: every bias (BitFit's set), the LayerNorm weights, 2 D depth factors and the head;
    ViT-B/16: 140,544 without the head.
    Merge: γ is diagonal and the branch is affine in its last Linear's output (LayerScale, when present,
    is diagonal too), so γ folds into attn.proj and mlp.fc2 (W ← diag(γ) W, b ← γ ⊙ b): a plain timm ViT.
    """

    summary = "DiffFit: biases, LayerNorms and a per-channel scale on every residual branch"
    mergeable = True
    train_defaults = PETL_VISION_DEFAULTS
    tune_grid = LayerNormTuning.tune_grid

    def apply(self, model: nn.Module) -> None:
        freeze_all(model)
        for name in bias_names(model) + norm_names(model):
            model.get_parameter(name).requires_grad_(True)
        like = next(model.parameters())
        for block in model.blocks:
            block.drop_path1 = ScaledBranch(block.drop_path1, model.embed_dim, like)
            block.drop_path2 = ScaledBranch(block.drop_path2, model.embed_dim, like)

    def merge(self, model: nn.Module) -> nn.Module:
        merged = fold_wrappers(model)  # a copy, the γ still to be applied below
        with torch.no_grad():
            for original, block in zip(model.blocks, merged.blocks):
                for gamma, linear in (
                    (original.drop_path1.gamma, block.attn.proj),
                    (original.drop_path2.gamma, block.mlp.fc2),
                ):
                    linear.weight.mul_(gamma.view(-1, 1))
                    linear.bias.mul_(gamma)
        return merged
