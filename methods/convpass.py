"""Convpass: convolutional bypasses (Jie & Deng, 2022, "Convolutional Bypasses Are Better Vision
Transformer Adapters")."""

from __future__ import annotations

import dataclasses

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from peftbench.errors import PeftbenchError

from ._registry import register_method
from .adapter import QuickGELU, pre_norm_blocks
from .base import Method, freeze_all, option


class ConvBypass(nn.Module):
    """down (D -> d) · QuickGELU · 3x3 conv over the patch grid (the class token through the same conv
    as a 1 x 1 map) · QuickGELU · dropout · up (d -> D)."""

    def __init__(self, width: int, dim: int, grid: tuple[int, int], xavier: bool, dropout: float, like: torch.Tensor):
        super().__init__()
        factory = {"device": like.device, "dtype": like.dtype}
        self.grid, self.dim = grid, dim
        self.down = nn.Linear(width, dim, **factory)
        self.conv = nn.Conv2d(dim, dim, 3, 1, 1, **factory)
        self.up = nn.Linear(dim, width, **factory)
        self.act = QuickGELU()
        self.dropout = nn.Dropout(dropout)
        with torch.no_grad():
            nn.init.xavier_uniform_(self.down.weight)
            nn.init.zeros_(self.down.bias)
            if xavier:
                nn.init.xavier_uniform_(self.conv.weight)
            else:  # the identity at the kernel's centre
                nn.init.zeros_(self.conv.weight)
                self.conv.weight[:, :, 1, 1] += torch.eye(dim, **factory)
            nn.init.zeros_(self.conv.bias)
            nn.init.zeros_(self.up.weight)
            nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, height, width = x.shape[0], *self.grid
        down = self.act(self.down(x))
        patches = down[:, 1:].reshape(batch, height, width, self.dim).permute(0, 3, 1, 2)
        patches = self.conv(patches).permute(0, 2, 3, 1).reshape(batch, height * width, self.dim)
        token = self.conv(down[:, :1].reshape(batch, 1, 1, self.dim).permute(0, 3, 1, 2)).reshape(batch, 1, self.dim)
        return self.up(self.dropout(self.act(torch.cat([token, patches], dim=1))))


class NormTap(nn.Module):
    """Replaces a block's norm: normalises as before and hands its output to the branch's bypass."""

    def __init__(self, norm: nn.Module, bypass: BypassAfterBranch):
        super().__init__()
        self.norm = norm
        self.sink = (bypass,)  # registered once, under the drop path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.norm(x)
        self.sink[0].stream = out
        return out


class BypassAfterBranch(nn.Module):
    """Replaces a block's drop path: drop_path(branch) + s · drop_path(bypass(norm(x))), as Convpass's
    `x + drop_path(attn(norm1(x))) + drop_path(adapter_attn(norm1(x))) * s` (two drop-path masks)."""

    def __init__(self, drop_path: nn.Module, bypass: ConvBypass, scale: float):
        super().__init__()
        self.drop_path, self.bypass, self.scale = drop_path, bypass, scale
        self.stream: torch.Tensor | None = None

    def forward(self, branch: torch.Tensor) -> torch.Tensor:
        stream, self.stream = self.stream, None
        out = self.drop_path(branch)
        return out + self.drop_path(self.bypass(stream)) * self.scale


@register_method("convpass")
@dataclasses.dataclass
class Convpass(Method):
    """Convpass (Jie & Deng, 2022, Eq. 3-4): in every block, a convolutional bypass beside the attention
    and one beside the MLP, each reading the block's normalised input and added to the residual stream
    with its own drop path, scaled by s: x <- x + drop_path(attn(LN1 x)) + s · drop_path(C(LN1 x)),
    then the same with the MLP and LN2. C: down (D -> 8) · QuickGELU · 3x3 conv on the patch grid (the
    class token as a 1 x 1 map through the same conv) · QuickGELU · dropout 0.1 · up (8 -> D).
    Matched to JieShibo/PETL-ViT, convpass/vtab/convpass.py (`Convpass`, `forward_block`,
    `set_Convpass`); per-task scale and conv init in convpass/vtab/configs/convpass/<task>.yaml.
    Init: down xavier_uniform, zero bias; conv: the identity at the kernel centre (`xavier_init=False`)
    or xavier_uniform (`True`), zero bias; up zeros, so the model starts at the backbone's function.
    Trainable: 2 depth (2 D d + d + 9 d² + d + D) and the head; ViT-B/16: 327,552 without the head.
    Not mergeable: the bypass is non-linear. With LayerScale backbones the bypass is not scaled by it
    (the released ViT has none).
    """

    dim: int = option(8, "d, the bypass's width (their dim=8)")
    scale: float = option(0.1, "s, the bypass's fixed factor (their per-task `scale`)")
    xavier_init: bool = option(False, "xavier_uniform conv init instead of the centred identity (per task)")
    dropout: float = option(0.1, "dropout before the up projection (their nn.Dropout(0.1))")

    summary = "Convpass: 3x3 convolutional bypasses beside every attention and MLP"
    not_defined_because = "its 3x3 convolutions run on the ViT's patch grid beside one class token"
    mergeable = False
    # convpass/vtab/train.py: AdamW (one group) lr 1e-3, wd 1e-4, timm's CosineLRScheduler (t_initial 100,
    # warm-up 10 from 1e-6, lr_min 1e-5) stepped `scheduler.step(ep)` after each of 100 epochs, drop path 0.1.
    train_defaults = {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 1e-4, "warmup_lr": 1e-6, "min_lr": 1e-5,
                      "scheduler": "timm-epoch", "drop_path": 0.1}  # fmt: skip

    def __post_init__(self) -> None:
        if self.dim < 1 or not 0 <= self.dropout < 1:
            raise PeftbenchError(
                f"convpass: dim must be at least 1 and dropout in [0, 1), got {self.dim}, {self.dropout}"
            )

    def apply(self, model: nn.Module) -> None:
        blocks = pre_norm_blocks(model, self.name)
        if not isinstance(model, VisionTransformer) or model.num_prefix_tokens != 1:
            raise PeftbenchError("convpass needs a ViT with one class token before its patch grid")
        freeze_all(model)
        grid, like = tuple(model.patch_embed.grid_size), next(model.parameters())
        for block in blocks:
            for norm, drop_path in (("norm1", "drop_path1"), ("norm2", "drop_path2")):
                bypass = ConvBypass(model.embed_dim, self.dim, grid, self.xavier_init, self.dropout, like)
                after = BypassAfterBranch(getattr(block, drop_path), bypass, self.scale)
                setattr(block, drop_path, after)
                setattr(block, norm, NormTap(getattr(block, norm), after))

    def no_weight_decay(self, model: nn.Module) -> set[str]:
        return set()  # their AdamW has one group over the bypasses and the head
