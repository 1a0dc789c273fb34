"""Adapter+ (Steitz & Roth, CVPR 2024, "Adapters Strike Back"): a bottleneck after each block, with
channel-wise scaling, its own drop path, no normalisation, Houlsby's init."""

from __future__ import annotations

import dataclasses

import torch
from timm.layers import DropPath
from torch import nn

from peftbench.errors import PeftbenchError

from ._registry import register_method
from .adapter import Bottleneck, StreamTap, pre_norm_blocks
from .base import Method, freeze_all, option


class AdapterAfterBlock(nn.Module):
    """Replaces a block's `drop_path2`: with m = drop_path(branch) and x' the stream before the MLP
    (handed over by `StreamTap` on norm2), returns m + s ⊙ drop_path_a(A(x' + m)), so the block
    outputs z + s ⊙ drop_path_a(A(z)) with z = x' + m its usual output, as Adapter+'s
    `forward_post`: `x = self.adapter(x, skip=x)` after the MLP's residual add."""

    def __init__(self, drop_path: nn.Module, adapter: Bottleneck, adapter_drop_path: float):
        super().__init__()
        self.drop_path, self.adapter = drop_path, adapter
        self.adapter_drop_path = DropPath(adapter_drop_path) if adapter_drop_path > 0 else nn.Identity()
        like = adapter.up.weight
        self.scaling = nn.Parameter(torch.ones(like.shape[0], device=like.device, dtype=like.dtype))
        self.stream: torch.Tensor | None = None

    def forward(self, branch: torch.Tensor) -> torch.Tensor:
        stream, self.stream = self.stream, None
        branch = self.drop_path(branch)
        return branch + self.adapter_drop_path(self.adapter(stream + branch)) * self.scaling


@register_method("adapter_plus")
@dataclasses.dataclass
class AdapterPlus(Method):
    """Adapter+ (Steitz & Roth, CVPR 2024, Sec. 3, Eq. 5, Fig. 2 "Post-Adapter"): in every block, after
    the MLP's residual add, z <- z + s ⊙ drop_path_a(W_up · GELU(W_down · z + b_down) + b_up), s a
    learned per-channel scale (ones at init), no LayerNorm in the adapter, no dropout, a drop path of
    its own (rate 0.1 in every block). Matched to visinf/adapter_plus@191c4ab,
    adapter_plus/vit_adapter.py (`Adapter` with `norm_layer=None`, `scaling="channel"`,
    `init="houlsby"`; `AdapterBlock.forward_post`), conf/adapter/adapter_plus.yaml and base_adapter.yaml
    (dim 8 in conf/experiment/vtab/adapter_plus_dim8.yaml, dropout 0, drop_path 0.1).
    Init: both weights trunc_normal(std 0.01, cut at ±0.02), zero biases; their ViT builds its blocks
    again after timm's `init_weights`, so this init is what training starts from.
    Trainable: depth (2 D d + d + D + D) and the head; ViT-B/16, d = 8: 165,984 without the head.
    Decay as their `add_weight_decay` (none on 1-D tensors: biases, s). Not mergeable (GELU).
    Schedule: their Lightning-bolts LinearWarmupCosineAnnealingLR (warm-up from lr/100, cosine to
    lr/1000) stepped at each epoch's end (`scheduler = "bolts-epoch"`, the default here); `--protocol
    paper` adds their VTAB-1k recipe (bf16, batch 64, the bilinear resize; tasks/paper/SOURCES.md 4e).
    """

    dim: int = option(8, "d, the bottleneck width (their VTAB runs: 1 to 32; dim8 config)")
    drop_path: float = option(0.1, "the adapter's own drop path rate (their adapter.drop_path)")

    summary = "Adapter+: a channel-scaled GELU bottleneck after every block, with its own drop path"
    mergeable = False
    # conf/train/default.yaml and optimizer/adamw.yaml: AdamW lr 1e-3, wd 1e-4, warm-up 10 epochs from
    # lr / lr_start_factor (100), cosine to lr / lr_factor (1000), 100 epochs, stepped per epoch; ViT drop path 0.1.
    train_defaults = {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 1e-4, "warmup_lr": 1e-5, "min_lr": 1e-6,
                      "drop_path": 0.1, "scheduler": "bolts-epoch"}  # fmt: skip

    def __post_init__(self) -> None:
        if self.dim < 1 or not 0 <= self.drop_path < 1:
            raise PeftbenchError(f"adapter_plus: dim must be at least 1 and drop_path in [0, 1), got {self.dim}, "
                                 f"{self.drop_path}")  # fmt: skip

    def apply(self, model: nn.Module) -> None:
        blocks = pre_norm_blocks(model, self.name)
        freeze_all(model)
        like = next(model.parameters())
        for block in blocks:
            adapter = Bottleneck(model.embed_dim, self.dim, nn.GELU(), 0.0, like)
            with torch.no_grad():
                for linear in (adapter.down, adapter.up):
                    nn.init.trunc_normal_(linear.weight, std=0.01, a=-0.02, b=0.02)
                    nn.init.zeros_(linear.bias)
            after = AdapterAfterBlock(block.drop_path2, adapter, self.drop_path)
            block.drop_path2 = after
            block.norm2 = StreamTap(block.norm2, after)
