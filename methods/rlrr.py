"""RLRR: Residual-based Low-Rank Rescaling (Dong et al., CVPR 2024)."""

from __future__ import annotations

import dataclasses
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from peftbench.anatomy import block_linear_paths, family_of, patch_embed_path, stage_transition_paths

from ._fold import FoldableWrapper, wrap
from ._registry import register_method
from ._scale_shift import SSFWrapper, block_norm_pair_paths
from .base import Method, freeze_all

NO_DECAY_MARKERS = ("bias", "norm")


class RLRRLinear(FoldableWrapper):
    """A frozen Linear y = x Wᵀ + b rescaled as W' = W + (s_out s_inᵀ) ⊙ W, b' = b + f.

    The output rows split into `groups` equal slices (3 for a fused qkv: q, k, v) and each slice
    has its own s_in; s_out and f are per output row, so a slice's rows of them are its own too.
    Storage: s_in (groups, in), s_out (out, 1), f (out,). kaiming_uniform_ on (groups, in) has
    fan_in = in, the same U(±√(6/in)) as the authors' (1, in) per layer; on (out, 1) fan_in = 1,
    U(±√6), the same as per-slice (out/groups, 1). So the init is the authors' in distribution.
    f is named `bias_shift` so that the authors' name rule exempts it from weight decay.
    """

    def __init__(self, layer: nn.Linear, groups: int = 1):
        super().__init__()
        self.layer = layer
        out_features, in_features = layer.weight.shape
        if out_features % groups:
            raise ValueError(f"{out_features} output rows do not split into {groups} equal groups")
        kwargs = {"device": layer.weight.device, "dtype": layer.weight.dtype}
        self.groups = groups
        self.s_in = nn.Parameter(torch.empty(groups, in_features, **kwargs))
        self.s_out = nn.Parameter(torch.empty(out_features, 1, **kwargs))
        self.bias_shift = nn.Parameter(torch.zeros(out_features, **kwargs))
        nn.init.kaiming_uniform_(self.s_in)
        nn.init.kaiming_uniform_(self.s_out)

    def rescale(self) -> torch.Tensor:
        """s_out s_inᵀ (out×in), each group of rows using its own s_in."""
        out_features, in_features = self.layer.weight.shape
        s_out = self.s_out.view(self.groups, out_features // self.groups, 1)
        return (s_out * self.s_in.unsqueeze(1)).view(out_features, in_features)

    def adapted(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(W', b') = (W + (s_out s_inᵀ) ⊙ W, b + f)."""
        weight = self.layer.weight
        return torch.addcmul(weight, weight, self.rescale()), self.adapted_bias()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return RescaledLinear.apply(x, self.layer.weight, self.adapted_bias(), self.s_in, self.s_out, self.groups)

    def adapted_bias(self) -> torch.Tensor:
        return self.bias_shift if self.layer.bias is None else self.layer.bias + self.bias_shift

    @torch.no_grad()
    def fold(self) -> nn.Linear:
        weight, bias = self.adapted()
        self.layer.weight.copy_(weight)
        self.layer.bias = nn.Parameter(bias.detach().clone(), requires_grad=False)
        return self.layer


class RescaledLinear(torch.autograd.Function):
    """y = x W'ᵀ + b with W' = W + (s_out s_inᵀ) ⊙ W (per row group), W frozen: a training step
    within a few per cent of a plain Linear whose weight trains.

    Forward forms W' once (O(out·in)) and runs ONE matmul, as the authors' RLRRLinear.forward;
    the form x Wᵀ + s_out ⊙ ((s_in ⊙ x) Wᵀ) would double the matmuls. Backward takes the two
    matmuls a trainable Linear takes (grad of x with W', G = gᵀx for W') and reduces G ⊙ W to the
    scales with two matrix-vector products: ∂s_out = (G ⊙ W) s_in, ∂s_in = s_outᵀ (G ⊙ W), per
    group. It saves W' only (autograd would also keep the rescale matrix) and allocates one
    W-sized tensor each way (W' forward, G backward, as the trainable Linear does), where autograd
    allocates several: fresh memory per step is what costs on the CPU (BENCHMARKS.md, section 4).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, s_in, s_out, groups: int):
        out_features, in_features = weight.shape
        ctx.groups, ctx.input_dtype = groups, x.dtype
        rows = weight.view(groups, out_features // groups, in_features)
        # one W-sized allocation, three passes: (W ⊙ s_out) ⊙ s_in + W
        adapted = (rows * s_out.view(groups, -1, 1)).mul_(s_in.unsqueeze(1)).add_(rows).view_as(weight)
        if torch.is_autocast_enabled(x.device.type):  # the matmul's precision, as F.linear under autocast
            dtype = torch.get_autocast_dtype(x.device.type)
            x, adapted, bias = x.to(dtype), adapted.to(dtype), bias.to(dtype)
        with torch.autocast(x.device.type, enabled=False):
            y = F.linear(x, adapted, bias)
        ctx.save_for_backward(x, weight, adapted, s_in, s_out)
        return y

    @staticmethod
    def backward(ctx, grad_y):
        x, weight, adapted, s_in, s_out = ctx.saved_tensors
        out_features, in_features = weight.shape
        grad_y = grad_y.reshape(-1, out_features).to(adapted.dtype)
        grad_x = (grad_y @ adapted).view(x.shape).to(ctx.input_dtype) if ctx.needs_input_grad[0] else None
        grad_rescale = (grad_y.t() @ x.reshape(-1, in_features)).to(weight.dtype).mul_(weight)  # G ⊙ W
        per_group = grad_rescale.view(ctx.groups, out_features // ctx.groups, in_features)
        grad_s_out = torch.bmm(per_group, s_in.unsqueeze(2)).view_as(s_out)
        grad_s_in = torch.bmm(s_out.view(ctx.groups, 1, -1), per_group).view_as(s_in)
        grad_bias = grad_y.sum(0).to(s_out.dtype)
        return grad_x, None, grad_bias, grad_s_in, grad_s_out, None


def rlrr_linear_paths(model: nn.Module) -> list[tuple[str, int]]:
    """(path, row groups) of every Linear RLRR rescales. vit (models/networks.py): q, k and v separately
    (3 groups of timm's fused qkv), out, fc1, fc2 of every block; swin (models/swin.py): qkv as ONE
    Linear (one s_in), proj, fc1, fc2 and every PatchMerging's reduction (bias-free: only f is added)."""
    swin = family_of(model) == "swin"
    paths = [(path, 3 if path.endswith("attn.qkv") and not swin else 1) for path in block_linear_paths(model)]
    if swin:
        paths += [(path, 1) for path in stage_transition_paths(model) if path.endswith("downsample.reduction")]
    return paths


def rlrr_pair_paths(model: nn.Module) -> list[str]:
    """Where RLRR's SSF pairs sit: after every block's norm1 and norm2 and the final norm, and (vit only,
    `ssf_scale_patch` in networks.py) after the patch-embedding conv; models/swin.py adapts no patch embedding."""
    patch = [] if family_of(model) == "swin" else [patch_embed_path(model)]
    return patch + block_norm_pair_paths(model)


@register_method("rlrr")
@dataclasses.dataclass
class RLRR(Method):
    """Residual-based Low-Rank Rescaling (Dong et al., CVPR 2024).

    Equation: for q, k and v (separately, as row slices of timm's fused qkv), the attention
    projection, fc1 and fc2 of every block, W' = W + (s_out s_inᵀ) ⊙ W and b' = b + f.
    In addition SSF pairs (γ ⊙ x + β) follow the patch-embedding conv, each block's norm1 and
    norm2, and the final LayerNorm.
    Init: s_in, s_out with PyTorch's default kaiming_uniform_ on (1, in) and (out, 1) tensors,
    f = 0; SSF γ ~ N(1, 0.02), β ~ N(0, 0.02). Matches the released code (zstarN70/RLRR,
    models/networks.py: RLRRLinear, RLRRBlock, RLRREncoder, RLRREmbeddings; train_vtab.py trains
    every parameter named head/scale/shift).
    Trainable: s_in, s_out, f, the SSF pairs and the head; 23,808 per ViT-B/16 block, 288,768 in
    all without the head (765,952 on ViT-L/16).
    Swin (models/swin.py, released 2024-07 and wired to no training script): the rescaling on each
    block's qkv (one s_in for the fused Linear), proj, fc1, fc2 and each PatchMerging reduction; SSF
    pairs after norm1, norm2 and the final norm; no patch-embedding pair. 358,144 on Swin-B.
    Weight decay: by name as the authors' `get_parameters`: names holding "bias" or "norm" get
    none. Parameter names make that split theirs: f is `bias_shift`; the SSF pairs after norms
    live under `…norm1.ssf`, `…norm2.ssf`, `norm.ssf` and `head.bias` holds "bias" (no decay);
    s_in, s_out, the pair under `patch_embed.proj.ssf` and `head.weight` are decayed.
    Merge: everything is linear in the frozen weights, so W', b' and the SSF pairs fold into a
    plain timm ViT (Eq. 20).
    """

    summary = "RLRR: residual low-rank rescaling of every linear (q, k, v separate) plus SSF after norms"
    families = ("vit", "swin")
    not_defined_because = "its released code defines it on ViT (models/networks.py) and Swin (models/swin.py) only"
    # The authors' schedule end points (train_vtab.py / VTABConfig.py); lr and weight decay are per task.
    # and its element-wise "drop path" (networks.py) under every protocol, not only `paper`.
    train_defaults = {"optimizer": "adamw", "warmup_lr": 1e-7, "min_lr": 1e-8, "drop_path_mode": "dropout"}
    mergeable = True

    def apply(self, model: nn.Module) -> None:
        freeze_all(model)
        for path in rlrr_pair_paths(model):
            wrap(model, path, SSFWrapper)
        for path, groups in rlrr_linear_paths(model):
            wrap(model, path, partial(RLRRLinear, groups=groups))

    def no_weight_decay(self, model: nn.Module) -> set[str]:
        return {
            name
            for name, parameter in model.named_parameters()
            if parameter.requires_grad and any(marker in name for marker in NO_DECAY_MARKERS)
        }
