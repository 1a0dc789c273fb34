"""The two classic sequential adapter placements as OSU-MLB/PETL_Vision builds them: Houlsby's (after
the attention and after the MLP) and Pfeiffer's (after the MLP only)."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch
from torch import nn

from ._registry import register_method
from .adapter import Bottleneck, check_init, check_options, init_bottleneck, pre_norm_blocks
from .base import Method, freeze_all, option
from .norm_tuning import PETL_VISION_DEFAULTS


class AdapterOnBranch(nn.Module):
    """Replaces a block's drop path as PETL_Vision's `ft_*_mode: sequential_after`:
    y = drop_path(branch), then drop_path(ls(y + s · A(y))), their
    `drop_path1(ls1(ft_attn_module(drop_path1(ls1(attn(norm1(x)))), add_residual=True)))`: the drop
    path (two masks) and the LayerScale run twice, as their Block.forward does. The LayerScale is held
    in a tuple, so it stays registered once, at the block's ls1 / ls2."""

    def __init__(self, drop_path: nn.Module, layer_scale: nn.Module, adapter: Bottleneck, scale: float):
        super().__init__()
        self.drop_path, self.adapter, self.scale = drop_path, adapter, scale
        self.layer_scale = (layer_scale,)

    def forward(self, branch: torch.Tensor) -> torch.Tensor:
        branch = self.drop_path(branch)
        return self.drop_path(self.layer_scale[0](branch + self.scale * self.adapter(branch)))


@dataclasses.dataclass
class SequentialAdapter(Method):
    """A ReLU bottleneck after a block's branch output: x <- x + m + s · W_up · dropout(ReLU(W_down · m
    + b_down)) + b_up, m the branch's (drop-pathed) output. Matched to PETL_Vision@245d262,
    model/adapter.py (`Adapter`: down_proj -> ReLU -> dropout 0.1 -> up_proj, times `adapter_scaler`
    and `merge_factor` 1), model/block.py (`sequential_after`), experiment/config/method/*.yml.

    Init: their configs ask `adapter_init: xavier` (xavier_uniform weights, normal(std 1e-6) biases),
    but VisionTransformerPETL's `init_weights('')` runs after the blocks are built and re-initialises
    every nn.Linear, the adapters' included, to trunc_normal(0.02) with zero bias, and the checkpoint
    holds no adapter keys: `init=effective` (default) is what their runs start from; `init=as_written`
    gives the Xavier init. Not mergeable: the ReLU bottleneck is not linear in the frozen weights.
    No published per-task settings (PETL_Vision tunes lr, wd, s and d): `--protocol tune` runs their grid.
    """

    dim: int = option(8, "d, the bottleneck width (their grid: 4, 8, 16, 32)")
    scale: float = option(0.1, "s, the fixed factor on the adapter's output (their grid: 0.01, 0.1, 1, 10)")
    dropout: float = option(0.1, "dropout after the ReLU (their Adapter's 0.1)")
    init: str = option("effective", "effective (their runs: trunc_normal 0.02, zero bias) | as_written (Xavier)")

    branches: ClassVar[tuple[str, ...]] = ()
    mergeable = False
    train_defaults = PETL_VISION_DEFAULTS
    tune_grid = {"lr": (1e-3, 1e-2), "weight_decay": (1e-4, 1e-3), "scale": (0.01, 0.1, 1.0, 10.0),
                 "dim": (4, 8, 16, 32)}  # fmt: skip

    def __post_init__(self) -> None:
        check_options(self.name, self.dim, self.dropout)
        check_init(self.name, self.init)

    def apply(self, model: nn.Module) -> None:
        blocks = pre_norm_blocks(model, self.name)
        freeze_all(model)
        like = next(model.parameters())
        for block in blocks:
            for branch in self.branches:
                adapter = Bottleneck(model.embed_dim, self.dim, nn.ReLU(), self.dropout, like)
                init_bottleneck(adapter, self.init)
                drop_path, layer_scale = f"drop_path{branch}", getattr(block, f"ls{branch}")
                setattr(block, drop_path, AdapterOnBranch(getattr(block, drop_path), layer_scale, adapter, self.scale))


@register_method("adapter_houlsby")
@dataclasses.dataclass
class HoulsbyAdapter(SequentialAdapter):
    """Houlsby et al. (ICML 2019, "Parameter-Efficient Transfer Learning for NLP", Fig. 2): an adapter
    after the attention and one after the MLP of every block, as PETL_Vision's `rand_h_adapter`
    (`ft_attn_module` and `ft_mlp_module: adapter`, both `sequential_after`). The paper's adapter
    sits before the residual add and after the sub-layer's projection, which is where this one reads.
    Trainable: 2 depth (2 D d + d + D) and the head; ViT-B/16, d = 8: 313,536 without the head."""

    summary = "Houlsby adapters: a ReLU bottleneck after every attention and every MLP (PETL_Vision)"
    branches = ("1", "2")


@register_method("adapter_pfeiffer")
@dataclasses.dataclass
class PfeifferAdapter(SequentialAdapter):
    """Pfeiffer et al. (EACL 2021, "AdapterFusion", Sec. 3 / Fig. 2): one adapter per block, after the
    MLP only, as PETL_Vision's `rand_p_adapter` (`ft_mlp_module: adapter`, `sequential_after`).
    Trainable: depth (2 D d + d + D) and the head; ViT-B/16, d = 8: 156,768 without the head."""

    summary = "Pfeiffer adapters: a ReLU bottleneck after every MLP (PETL_Vision)"
    branches = ("2",)
