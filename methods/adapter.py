"""Bottleneck adapters on each block's MLP branch: NOAH's "Adapter-8" baseline and AdaptFormer.

Both are inserted by wrapping the modules of timm's pre-norm `Block`, whose forward is
`x = x + drop_path1(ls1(attn(norm1(x))))` then `x = x + drop_path2(ls2(mlp(norm2(x))))`;
timm's forward itself is not copied. Swin's window block and EVA's block share that MLP branch
(`residual_mlp_blocks`), so both adapters run on the vit, swin and eva families; a ConvNeXt block
has no residual MLP branch of its own (its MLP follows a depth-wise conv inside one branch).
"""

from __future__ import annotations

import dataclasses
import math

import torch
from timm.models.eva import EvaBlock
from timm.models.swin_transformer import SwinTransformerBlock
from timm.models.vision_transformer import Block, VisionTransformer
from torch import nn

from peftbench.anatomy import block_width, blocks
from peftbench.errors import PeftbenchError

from ._registry import register_method
from .base import Method, freeze_all, option


class QuickGELU(nn.Module):
    """x * sigmoid(1.702 x), the activation of NOAH's adapter."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class Bottleneck(nn.Module):
    """up(dropout(activation(down(x)))): width -> hidden -> width."""

    def __init__(self, width: int, hidden: int, activation: nn.Module, dropout: float, like: torch.Tensor):
        super().__init__()
        factory = {"device": like.device, "dtype": like.dtype}
        self.down = nn.Linear(width, hidden, **factory)
        self.act = activation
        self.dropout = nn.Dropout(dropout)
        self.up = nn.Linear(hidden, width, **factory)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.dropout(self.act(self.down(x))))


class AdapterAfterBranch(nn.Module):
    """Replaces a block's `drop_path2`: y = drop_path(branch), returns y + adapter(y); so the block
    computes x + m + adapter(m) with m its (drop-pathed) MLP branch, as NOAH's
    `x = x + self.adapter(self.drop_path(self.mlp(self.norm2(x))))`."""

    def __init__(self, drop_path: nn.Module, adapter: Bottleneck):
        super().__init__()
        self.drop_path = drop_path
        self.adapter = adapter

    def forward(self, branch: torch.Tensor) -> torch.Tensor:
        branch = self.drop_path(branch)
        return branch + self.adapter(branch)


class ParallelAdapter(nn.Module):
    """Replaces a block's `drop_path2`: returns drop_path(branch) + scale * adapter(x), where x is the
    residual stream the block's norm2 read (handed over by `StreamTap`); so the adapter reads x itself,
    not norm2(x), and its output bypasses the MLP branch's LayerScale and drop path, as AdaptFormer's
    `x = residual + drop_path(mlp(norm2(x))) + adapt_x`."""

    def __init__(self, drop_path: nn.Module, adapter: Bottleneck, scale: float):
        super().__init__()
        self.drop_path = drop_path
        self.adapter = adapter
        self.scale = scale
        self.stream: torch.Tensor | None = None

    def forward(self, branch: torch.Tensor) -> torch.Tensor:
        stream, self.stream = self.stream, None
        return self.drop_path(branch) + self.scale * self.adapter(stream)


class StreamTap(nn.Module):
    """Replaces a block's `norm2`: hands its input (the residual stream after attention) to the
    block's `ParallelAdapter`, then normalises as before. The adapter is held in a tuple, so it is
    registered once (under drop_path2) and deep copies keep the pair together."""

    def __init__(self, norm: nn.Module, adapter: ParallelAdapter):
        super().__init__()
        self.norm = norm
        self.sink = (adapter,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sink[0].stream = x
        return self.norm(x)


def residual_mlp_blocks(model: nn.Module, method: str) -> list[nn.Module]:
    """Blocks whose MLP branch is x + drop_path2(mlp(norm2(x))): timm's pre-norm ViT `Block`, Swin's
    window block and EVA's block (its layer scale `gamma_2` applied before drop_path2)."""
    kinds = (Block, SwinTransformerBlock, EvaBlock)
    found = blocks(model)
    other = sorted({type(b).__name__ for b in found if not isinstance(b, kinds)})
    if other:
        raise PeftbenchError(
            f"{method} needs pre-norm residual blocks in every layer; this model has {', '.join(other)}"
        )
    return found


def pre_norm_blocks(model: nn.Module, method: str) -> list[Block]:
    """The model's blocks, which must be timm's pre-norm `Block` (not the parallel or post-norm kinds)."""
    if not isinstance(model, VisionTransformer):
        raise PeftbenchError(f"{method} needs a timm VisionTransformer, got {type(model).__name__}")
    blocks = list(model.blocks)
    other = sorted({type(b).__name__ for b in blocks if not isinstance(b, Block)})
    if other:
        raise PeftbenchError(f"{method} needs timm's pre-norm Block in every layer; this model has {', '.join(other)}")
    return blocks


def check_options(method: str, dim: int, dropout: float) -> None:
    if dim < 1:
        raise PeftbenchError(f"{method}: dim must be at least 1, got {dim}")
    if not 0.0 <= dropout < 1.0:
        raise PeftbenchError(f"{method}: dropout must be in [0, 1), got {dropout}")


def check_init(method: str, init: str) -> None:
    if init not in ("effective", "as_written"):
        raise PeftbenchError(f"{method}: init must be 'effective' or 'as_written', got '{init}'")


@torch.no_grad()
def init_bottleneck(adapter: Bottleneck, init: str) -> None:
    """`effective`: trunc_normal(std 0.02, cut at ±2) weights and zero biases, what timm's ViT
    `init_weights` leaves when it runs after the adapter is built (NOAH's and PETL_Vision's models);
    `as_written`: the adapter's own Xavier weights and normal(std 1e-6) biases."""
    for linear in (adapter.down, adapter.up):
        if init == "effective":
            nn.init.trunc_normal_(linear.weight, std=0.02, a=-2.0, b=2.0)
            nn.init.zeros_(linear.bias)
        else:
            nn.init.xavier_uniform_(linear.weight)
            nn.init.normal_(linear.bias, std=1e-6)


def bottlenecks(model: nn.Module, method: str, dim: int, activation: type[nn.Module], dropout: float):
    """Freeze `model` and yield each pre-norm block with a new bottleneck on the model's device."""
    found = residual_mlp_blocks(model, method)
    freeze_all(model)
    like = next(model.parameters())
    for block in found:
        yield block, Bottleneck(block_width(block), dim, activation(), dropout, like)


@register_method("adapter")
@dataclasses.dataclass
class Adapter(Method):
    """Adapter-8, the sequential bottleneck adapter baseline as NOAH trains it (Zhang et al., 2022;
    the VPT paper's "Adapter" placement, after the FFN): in every block, on the MLP branch output
    m = mlp(norm2(x)),  x <- x + m + W_up · dropout(QuickGELU(W_down · m + b_down)) + b_up;
    the attention branch is unchanged. The adapter is applied after the branch's drop path, as
    NOAH's code (with LayerScale models it reads the scaled branch, ls2(m)).

    Matched to NOAH's released code (ZhangYuanhan-AI/NOAH): model/module/adapter_super.py,
    `QuickGELU` (x * sigmoid(1.702 x)) and `AdapterSuper` (ln1 -> QuickGELU -> dropout -> ln2, plus
    the identity); model/supernet_vision_transformer_timm.py, `Block.forward`; dim 8 in every layer (experiments/Adapter/ViT-B_prompt_adapter_8.yaml);
    dropout 0.1 (`--drop_rate_adapter` default in supernet_train_prompt.py).

    Init: `AdapterSuper.init_weights` sets `xavier_uniform_` weights and `normal_(bias, std=1e-6)`, but
    NOAH's `VisionTransformer.__init__` then runs `init_weights('')`, whose `self.apply(_init_vit_weights)`
    re-initialises every nn.Linear (the adapter's included; `apply` passes no name, so none is exempt)
    to trunc_normal(std 0.02, cut at ±2) with zero bias; the checkpoint holds no adapter keys, so that
    is what training starts from: `init=effective` (default), as `lora_qkv` does; `init=as_written` gives
    the adapter's own Xavier init.

    Trainable: depth x (2·D·dim + dim + D) and the head. Not mergeable: the adapter is a non-linear
    function of the MLP output, which no change of the frozen weights reproduces.
    """

    dim: int = option(8, "bottleneck width of each adapter (NOAH's Adapter-8)")
    dropout: float = option(0.1, "dropout inside the bottleneck, after QuickGELU (NOAH's --drop_rate_adapter)")
    init: str = option(
        "effective",
        "effective (NOAH's runs: trunc_normal 0.02, zero bias) | as_written (Xavier)",
        key_neutral="as_written",
    )

    summary = "Adapter-8 (NOAH's baseline): a QuickGELU bottleneck on each block's MLP output"
    families = ("vit", "swin", "eva")
    not_defined_because = "a ConvNeXt block has no residual MLP branch to adapt"
    # NOAH's configs/Adapter/VTAB/slurm_train_adapter_vtab.sh (commit fde4c09 and later): AdamW (the
    # engine's default), lr 0.001 (the first commit, ded6834, had 0.005), weight decay 1e-4, batch 64,
    # 100 epochs, 10 warm-up (timm scheduler default).
    train_defaults = {"lr": 1e-3, "weight_decay": 1e-4}
    mergeable = False

    def __post_init__(self) -> None:
        check_options(self.name, self.dim, self.dropout)
        check_init(self.name, self.init)

    def apply(self, model: nn.Module) -> None:
        for block, adapter in bottlenecks(model, self.name, self.dim, QuickGELU, self.dropout):
            init_bottleneck(adapter, self.init)
            block.drop_path2 = AdapterAfterBranch(block.drop_path2, adapter)


@register_method("adaptformer")
@dataclasses.dataclass
class AdaptFormer(Method):
    """AdaptFormer (Chen et al., NeurIPS 2022): a scaled bottleneck parallel to each block's MLP,
    x' = x + attn-branch,  x <- x' + mlp(norm2(x')) + s · W_up · dropout(ReLU(W_down · x' + b_down)) + b_up,
    s = `scale` = 0.1. The adapter reads x' itself, not norm2(x'): the released code does so and its
    author confirmed the code, not the paper's Fig. 2b / Eq. with LN, is right (ShoufaChen/AdaptFormer
    issue #9).

    Matched to the released code (ShoufaChen/AdaptFormer): models/adapter.py, `Adapter` (down_proj ->
    ReLU -> dropout -> up_proj, times `scale`; init_option "lora": `kaiming_uniform_(down, a=sqrt(5))`,
    zero up weight and zero biases, so the model equals the frozen backbone at init);
    models/custom_modules.py, `Block.forward` with `ffn_option == "parallel"` and `dropout=0.1`;
    main_image.py `tuning_config` (layernorm option "none", scalar "0.1", `--ffn_num` 64).
    Bottleneck `dim` 64: the released default and the paper's image setting (AdaptFormer-64); the
    paper reports no VTAB-1k run, so there is no VTAB-specific value to follow.

    Placement: the adapter's output is added after the MLP branch's drop path (and LayerScale), as
    the released Block.forward adds `adapt_x` after `drop_path(mlp(...))`: the block's norm2 hands its
    input to the adapter (`StreamTap`), its drop_path2 adds the adapter's output (`ParallelAdapter`);
    timm's Block.forward itself runs unchanged.

    Trainable: depth x (2·D·dim + dim + D) and the head. Not mergeable: the ReLU bottleneck is not
    linear in the frozen weights.
    """

    dim: int = option(64, "bottleneck width of each adapter (AdaptFormer-64)")
    dropout: float = option(0.1, "dropout inside the bottleneck, after ReLU")
    scale: float = option(0.1, "s, the fixed factor on the adapter's output")

    summary = "AdaptFormer: a scaled ReLU bottleneck parallel to each block's MLP"
    families = ("vit", "swin", "eva")
    not_defined_because = "a ConvNeXt block has no residual MLP branch to adapt"
    # main_image.py: SGD, momentum 0.9, weight decay 0, lr = blr 0.1 x batch / 256 (0.025 at the
    # engine's batch 64); its 20 warm-up epochs are left to the suite (they must fit its epochs).
    train_defaults = {"optimizer": "sgd", "momentum": 0.9, "lr": 0.025, "weight_decay": 0.0}
    mergeable = False

    def __post_init__(self) -> None:
        check_options(self.name, self.dim, self.dropout)

    def apply(self, model: nn.Module) -> None:
        for block, adapter in bottlenecks(model, self.name, self.dim, nn.ReLU, self.dropout):
            nn.init.kaiming_uniform_(adapter.down.weight, a=math.sqrt(5))
            for tensor in (adapter.down.bias, adapter.up.weight, adapter.up.bias):
                nn.init.zeros_(tensor)
            block.drop_path2 = ParallelAdapter(block.drop_path2, adapter, self.scale)
            block.norm2 = StreamTap(block.norm2, block.drop_path2)
