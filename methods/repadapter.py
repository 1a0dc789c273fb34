"""RepAdapter (Luo et al., 2023, "Towards Efficient Visual Adaption via Structural
Re-parameterization"): linear group-wise adapters before the attention and the MLP, folded into the
next projection after training."""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from peftbench.errors import PeftbenchError

from ._fold import FoldableWrapper
from ._registry import register_method
from .adapter import pre_norm_blocks
from .base import Method, freeze_all, option


class RepAdapterBeforeLinear(FoldableWrapper):
    """Replaces the first projection of a branch (attn.qkv, mlp.fc1): linear(x + s · B(dropout(A x))),
    A: D -> d dense, B: d -> D in `groups` groups (their Conv1d(d, D, 1, groups=2)). Both are linear,
    so the adapter is x ↦ M x + c with M = I + s · B A, c = s · (B a + b), and `fold` returns the
    projection with W M and W c + bias: the plain layer, no inference cost."""

    def __init__(self, linear: nn.Linear, dim: int, groups: int, scale: float, dropout: float):
        super().__init__()
        width, factory = linear.in_features, {"device": linear.weight.device, "dtype": linear.weight.dtype}
        self.linear, self.groups, self.scale = linear, groups, scale
        self.down = nn.Linear(width, dim, **factory)
        self.dropout = nn.Dropout(dropout)
        self.up_weight = nn.Parameter(torch.zeros(width, dim // groups, **factory))
        self.up_bias = nn.Parameter(torch.zeros(width, **factory))
        with torch.no_grad():  # their conv_A: xavier_uniform, zero bias; conv_B: zeros, so x ↦ x at init
            nn.init.xavier_uniform_(self.down.weight)
            nn.init.zeros_(self.down.bias)

    def dense_up(self) -> torch.Tensor:
        """B as a D x d matrix: group g's D/groups outputs read only group g's d/groups inputs."""
        return torch.block_diag(*self.up_weight.chunk(self.groups, dim=0))

    def adapt(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.scale * F.linear(self.dropout(self.down(x)), self.dense_up(), self.up_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.adapt(x))

    @torch.no_grad()
    def fold(self) -> nn.Module:
        up = self.dense_up()
        mix = torch.eye(self.linear.in_features, device=up.device, dtype=up.dtype) + self.scale * up @ self.down.weight
        shift = self.scale * (up @ self.down.bias + self.up_bias)
        bias = self.linear.weight @ shift + (self.linear.bias if self.linear.bias is not None else 0)
        self.linear.weight.copy_(self.linear.weight @ mix)
        if self.linear.bias is None:
            self.linear.bias = nn.Parameter(bias, requires_grad=False)
        else:
            self.linear.bias.copy_(bias)
        return self.linear


@register_method("repadapter")
@dataclasses.dataclass
class RepAdapter(Method):
    """RepAdapter (Luo et al., 2023, Sec. 3.2-3.3, Eq. 4-7): in every block a linear adapter
    x ↦ x + s · B(dropout(A x)) on the normalised input of the attention and of the MLP (`repblock`;
    `placement=attn`: the attention's only, their `repattn`), with no activation, B group-wise
    (2 groups), d = 8. Matched to luogen1996/RepAdapter@360992f, repadapter.py (`RepAdapter`,
    `forward_vit_block_adapter`, `set_RepAdapter`, `reparameterize`, `sparse2dense`, `set_RepWeight`);
    per-task s from configs/repblock/<task>.yaml; train.py for the recipe.
    Init as their module: A xavier_uniform with zero bias, B and its bias zero (the backbone's
    function at init); nothing re-initialises it (set after create_model).
    Trainable: per adapter D d + d + D d / groups + D, and the head; ViT-B/16 (repblock): 24 x 9,992 =
    239,808 without the head.
    Merge: the adapter is affine, so it folds into attn.qkv and mlp.fc1 (their `set_RepWeight`): a
    plain timm ViT with timm's keys. With LayerScale backbones nothing changes (the adapter is before
    the branch). Their block forward runs `drop_path1` for the MLP branch too, the same rate as timm's
    `drop_path2` (each call draws its own mask), so the two agree.
    """

    dim: int = option(8, "d, the adapter's width (their --dim 8)")
    scale: float = option(1.0, "s, the adapter's fixed factor (their per-task `scale`; set_RepAdapter's default 1)")
    groups: int = option(2, "groups of the up projection B (their Conv1d groups=2)")
    dropout: float = option(0.1, "dropout between A and B (their nn.Dropout(0.1))")
    placement: str = option("block", "block: before the attention and the MLP (repblock) | attn: the attention only")

    summary = "RepAdapter: linear group-wise adapters before attention and MLP, folded away after training"
    mergeable = True
    # train.py: AdamW (one group) lr 1e-3, wd 1e-4; timm's CosineLRScheduler (t_initial 100, warm-up 10
    # from 1e-6, lr_min 1e-5) stepped `scheduler.step(ep)` after each of 100 epochs; drop path 0.1.
    train_defaults = {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 1e-4, "warmup_lr": 1e-6, "min_lr": 1e-5,
                      "scheduler": "timm-epoch", "drop_path": 0.1}  # fmt: skip

    def __post_init__(self) -> None:
        if self.dim < 1 or self.groups < 1 or self.dim % self.groups:
            raise PeftbenchError(f"repadapter: dim must be a positive multiple of groups, got dim {self.dim}, "
                                 f"groups {self.groups}")  # fmt: skip
        if not 0 <= self.dropout < 1:
            raise PeftbenchError(f"repadapter: dropout must be in [0, 1), got {self.dropout}")
        if self.placement not in ("block", "attn"):
            raise PeftbenchError(f"repadapter: placement must be 'block' or 'attn', got '{self.placement}'")

    def apply(self, model: nn.Module) -> None:
        blocks = pre_norm_blocks(model, self.name)
        if model.embed_dim % self.groups:
            raise PeftbenchError(f"repadapter: the width {model.embed_dim} is not divisible by groups {self.groups}")
        freeze_all(model)
        for block in blocks:
            layers = [(block.attn, "qkv")] + ([(block.mlp, "fc1")] if self.placement == "block" else [])
            for parent, name in layers:
                wrapper = RepAdapterBeforeLinear(getattr(parent, name), self.dim, self.groups, self.scale, self.dropout)
                setattr(parent, name, wrapper)

    def no_weight_decay(self, model: nn.Module) -> set[str]:
        return set()  # their AdamW has one group over the adapters and the head
