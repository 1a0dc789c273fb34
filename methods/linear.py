"""Linear probing: only the classification head trains (VPT, Table 1, "Linear")."""

from __future__ import annotations

import dataclasses

from torch import nn

from peftbench.anatomy import ALL_FAMILIES

from ._registry import register_method
from .base import Method, freeze_all


@register_method("linear")
@dataclasses.dataclass
class LinearProbing(Method):
    """Linear probing on the frozen pre-logits features (Jia et al., ECCV 2022, "Linear").

    Trainable: the head only (the engine re-enables it). Because nothing before the head trains,
    the engine computes the frozen features once and trains the head on them.
    """

    summary = "Linear probing: only the head trains"
    train_defaults = {"lr": 1e-2, "weight_decay": 1e-4}
    mergeable = True
    families = ALL_FAMILIES

    def apply(self, model: nn.Module) -> None:
        freeze_all(model)
