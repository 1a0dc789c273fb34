"""Shared building blocks of SSF and RLRR: the scale-shift module, wrappers that fold back, helpers.

SSF (Lian et al., NeurIPS 2022, Eq. 1) rescales and shifts a feature per channel, y = γ ⊙ x + β.
A pair placed after a Linear, a LayerNorm or a Conv2d is linear in that layer's output, so it folds
into the layer's weight and bias (see `fold_scale_shift`). Initialisation γ ~ N(1, 0.02),
β ~ N(0, 0.02) matches `init_ssf_scale_shift` in SSF's released code (dongzelian/SSF,
models/vision_transformer.py), which RLRR reuses unchanged (zstarN70/RLRR, models/networks.py).

Wrappers hold the original layer as `layer`, so an adapted model's frozen keys gain `.layer`;
merging (methods/_fold.py) replaces every wrapper by its folded layer, restoring timm's keys.
"""

from __future__ import annotations

import torch
from timm.layers import LayerNorm2d
from torch import nn

from peftbench.anatomy import block_norm_paths

from ._fold import FoldableWrapper

Foldable = nn.Linear | nn.LayerNorm | nn.Conv2d

SCALE_STD = 0.02
SHIFT_STD = 0.02


class ScaleShift(nn.Module):
    """y = scale ⊙ x + shift along one channel axis (-1 for tokens, 1 for NCHW feature maps)."""

    def __init__(
        self,
        channels: int,
        channel_dim: int = -1,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__()
        self.channel_dim = channel_dim
        self.scale = nn.Parameter(torch.empty(channels, device=device, dtype=dtype))
        self.shift = nn.Parameter(torch.empty(channels, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.scale, mean=1.0, std=SCALE_STD)
        nn.init.normal_(self.shift, mean=0.0, std=SHIFT_STD)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channel_dim == -1:
            return torch.addcmul(self.shift, x, self.scale)
        trailing = [1] * (x.ndim - self.channel_dim - 1)
        return torch.addcmul(self.shift.view(-1, *trailing), x, self.scale.view(-1, *trailing))


class SSFWrapper(FoldableWrapper):
    """`layer` followed by a ScaleShift on its output channels."""

    def __init__(self, layer: Foldable):
        super().__init__()
        self.layer = layer
        channels, channel_dim = output_channels(layer)
        weight = layer.weight
        self.ssf = ScaleShift(channels, channel_dim, device=weight.device, dtype=weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ssf(self.layer(x))

    @torch.no_grad()
    def fold(self) -> nn.Module:
        fold_scale_shift(self.layer, self.ssf.scale, self.ssf.shift)
        return self.layer


def output_channels(layer: Foldable) -> tuple[int, int]:
    """(number of output channels, their axis in the output) of a foldable layer."""
    if isinstance(layer, nn.Linear):
        return layer.out_features, -1
    if isinstance(layer, nn.LayerNorm):
        if len(layer.normalized_shape) != 1:
            raise ValueError(f"SSF needs a LayerNorm over one axis, got shape {layer.normalized_shape}")
        if layer.weight is None:
            raise ValueError("SSF folds into a LayerNorm's affine parameters; this LayerNorm has none")
        return layer.normalized_shape[0], 1 if isinstance(layer, LayerNorm2d) else -1
    if isinstance(layer, nn.Conv2d):
        return layer.out_channels, 1
    raise TypeError(f"SSF attaches to Linear, LayerNorm or Conv2d, not {type(layer).__name__}")


@torch.no_grad()
def fold_scale_shift(layer: Foldable, scale: torch.Tensor, shift: torch.Tensor) -> None:
    """Fold y = scale ⊙ layer(x) + shift into `layer` in place: W' = diag(scale) W, b' = scale ⊙ b + shift.

    Linear (out×in), LayerNorm affine (C) and Conv2d (out×in×kh×kw) all index output channels on
    the first weight axis, so one rule serves the three. A layer without a bias gets one.
    """
    weight = layer.weight
    weight.mul_(scale.to(weight.dtype).view(-1, *[1] * (weight.ndim - 1)))
    bias = shift if layer.bias is None else torch.addcmul(shift, layer.bias, scale)
    layer.bias = nn.Parameter(bias.to(weight.dtype).detach().clone(), requires_grad=False)


def foldable_paths(model: nn.Module, paths: list[str]) -> list[str]:
    """The paths whose module is a foldable layer (a norm timm left as `Identity` is skipped)."""
    return [path for path in paths if isinstance(_submodule(model, path), (nn.Linear, nn.LayerNorm, nn.Conv2d))]


def _submodule(model: nn.Module, path: str) -> nn.Module | None:
    try:
        return model.get_submodule(path)
    except AttributeError:
        return None


def block_norm_pair_paths(model: nn.Module) -> list[str]:
    """The norms SSF and RLRR pair after: each block's norm1 and norm2 (and a SwiGLU's inner norm), then
    the final `norm` before pooling; the `fc_norm` of average-pooled models gets none, as in SSF's code."""
    return foldable_paths(model, block_norm_paths(model) + ["norm"])
