"""Full fine-tuning: every backbone parameter trains (the upper baseline of VPT, Table 1)."""

from __future__ import annotations

import dataclasses

from torch import nn

from peftbench.anatomy import ALL_FAMILIES

from ._registry import register_method
from .base import Method


@register_method("full")
@dataclasses.dataclass
class FullFineTuning(Method):
    """Full fine-tuning of all parameters (Jia et al., ECCV 2022, "Full" baseline).

    Trainable: the whole backbone and the new head. Merging is the identity: the result is
    already a plain timm ViT.
    """

    summary = "Full fine-tuning: every parameter trains"
    train_defaults = {"lr": 1e-4, "weight_decay": 0.05}
    tune_grid = {"lr": (1e-3, 5e-4, 1e-4, 5e-5, 1e-5), "weight_decay": (0.05, 1e-4, 0.0)}
    mergeable = True
    families = ALL_FAMILIES

    def apply(self, model: nn.Module) -> None:
        for parameter in model.parameters():
            parameter.requires_grad_(True)
