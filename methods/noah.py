"""NOAH, Neural prOmpt seArcH (Zhang et al., 2022): VPT-deep prompts, LoRA on the fused qkv and an
Adapter in every block, each with its own width per block, as the authors retrain a searched subnet."""

from __future__ import annotations

import dataclasses
import math
import re

import torch
from torch import nn

from peftbench.errors import PeftbenchError

from ._registry import register_method
from .adapter import AdapterAfterBranch, Bottleneck, QuickGELU, init_bottleneck, pre_norm_blocks
from .base import Method, freeze_all, option
from .lora_qkv import FusedLoRA
from .vpt import PromptRemover, PromptReplacer

# experiments/NOAH/subnet/VTAB/*.yaml, SUPERNET.VISUAL_PROMPT_DIM: each block's prompt tensor is built
# this many tokens long (its Xavier bound reads that shape), and the subnet uses its first L tokens.
SUPERNET_PROMPT_TOKENS = 100
WIDTH_OPTIONS = ("prompt_lens", "lora_ranks", "adapter_dims")


def parse_widths(method: str, name: str, text: str) -> list[int]:
    """`text` as widths: integers ≥ 0 separated by spaces or commas (0: no such module in a block)."""
    items = [item for item in re.split(r"[\s,]+", str(text).strip()) if item]
    if not items or not all(item.isdigit() for item in items):
        raise PeftbenchError(f"{method}: {name} must be integers ≥ 0 separated by spaces, got '{text}'")
    return [int(item) for item in items]


def per_block(method: str, name: str, widths: list[int], depth: int) -> list[int]:
    """One width per block: a single width applies to every block, otherwise exactly `depth` of them."""
    if len(widths) == 1:
        return widths * depth
    if len(widths) != depth:
        raise PeftbenchError(f"{method}: {name} has {len(widths)} values; this model has {depth} blocks")
    return widths


def prompt_bound(tokens: int, dim: int) -> float:
    """Xavier-uniform's bound for NOAH's (1, tokens, dim) prompt tensor: fan-in tokens·dim, fan-out dim."""
    return math.sqrt(6.0 / (tokens * dim + dim))


def replaced_prompts(lens: list[int]) -> list[int]:
    """How many prompt tokens (the last ones) block i's prompts replace, as NOAH's `Block.forward`: those
    of block i - 1 (`sample_last_prompt_tuning_dim`), so a block without prompts passes the earlier ones
    on and the next prompted block appends to them. Block 0's prompts replace the model-level prompts their
    `forward_features` appends, which we do not insert (no block reads them), so they replace none."""
    return [0] + lens[:-1]


@register_method("noah")
@dataclasses.dataclass
class NOAH(Method):
    """NOAH (Zhang et al., "Neural Prompt Search", 2022, Sec. 3; arXiv 2206.04673): each block i has
    VPT-deep prompts of length L_i, a LoRA pair of rank r_i on the fused qkv and an Adapter of width
    d_i on the MLP branch; a one-shot supernet search picks (L_i, r_i, d_i) per task, and the chosen
    subnet is retrained from the pretrained backbone. The supernet training and the evolutionary
    search are NOT run here: `--protocol paper` takes the authors' released result of that search for
    each VTAB-1k task (tasks/paper/noah.csv, from ZhangYuanhan-AI/NOAH@e9c55f3
    experiments/NOAH/subnet/VTAB/ViT-B_prompt_<task>.yaml, RETRAIN); elsewhere the widths are options
    (one integer for every block, or one per block); the default, 5 everywhere, is no searched subnet.

    Matched code: model/supernet_vision_transformer_timm.py. `Block.forward`: the block's prompts
    (`visual_prompt_token[:, :L_i]`, expanded, then `drop_prompt`, dropout 0.1) replace the previous
    block's L_{i-1} prompt outputs (appended if L_{i-1} = 0), then x += drop_path(attn(norm1(x))) and
    x += adapter(drop_path(mlp(norm2(x)))), the adapter returning its input plus the bottleneck.
    `Attention.forward`: qkv(x) + LoRA_b(LoRA_a(LoRA_drop(x))) over q, k and v (`lora_qkv`'s
    `FusedLoRA`, unscaled, dropout 0.1). model/module/adapter_super.py `AdapterSuper`: ln1 -> QuickGELU
    -> dropout 0.1 -> ln2 (`adapter`'s bottleneck). Dropout rates: supernet_train_prompt.py's
    `--drop_rate_prompt`, `--drop_rate_LoRA`, `--drop_rate_adapter` defaults (0.1 each), one `dropout` here.
    The prompts sit at the end of the sequence, after the patch tokens, as theirs (VPT puts them after
    the CLS token; attention treats tokens as a set, but dropout masks follow the token order).

    Init, as their runs start: the prompts Xavier-uniform on the supernet's (1, 100, D) tensor, bound
    sqrt(6 / (101 D)) (`nn.init.xavier_uniform_`; `init_weights` leaves parameters other than
    Linears, pos_embed and cls_token alone); the LoRA pair and the adapter's Linears trunc_normal(0.02,
    cut at ±2), zero adapter biases: `init_weights('')` re-initialises every nn.Linear after their
    own inits (Kaiming/zero LoRA, Xavier adapter), as `lora_qkv` and `adapter` (`init=effective`) say.

    Trainable: sum_i (L_i D + 4 D r_i + [d_i > 0](2 D d_i + d_i + D)) and the head. Their code also
    holds dead parameters: model-level prompts and their position embedding, which block 0's prompts
    replace before any block reads them (no gradient), and the unsampled rest of each supernet tensor;
    their printed counts (`get_sampled_params_numel`) include the model-level ones, ours do not.
    Not mergeable: prompts and the non-linear adapter cannot fold into the frozen weights.
    """

    prompt_lens: str = option("5", "L_i, prompt tokens per block: one integer or one per block (0: none)")
    lora_ranks: str = option("5", "r_i, rank of the fused-qkv LoRA per block: one integer or one per block (0: none)")
    adapter_dims: str = option("5", "d_i, adapter width per block: one integer or one per block (0: none)")
    dropout: float = option(0.1, "dropout on the prompts, the LoRA input and inside the adapter (NOAH's 0.1 each)")

    summary = "NOAH: per-block VPT prompts, fused-qkv LoRA and Adapter, widths from the authors' search"
    not_defined_because = "its subnets are searched on ViT-B/16 and its prompts need the ViT's token sequence"
    # configs/NOAH/VTAB/subnet/slurm_retrain_vtab.sh: lr 0.001, weight decay 1e-4, batch 64, 100 epochs.
    train_defaults = {"lr": 1e-3, "weight_decay": 1e-4}
    mergeable = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.dropout < 1.0:
            raise PeftbenchError(f"noah: dropout must be in [0, 1), got {self.dropout}")
        for name in WIDTH_OPTIONS:
            parse_widths(self.name, name, getattr(self, name))

    def widths(self, depth: int) -> list[list[int]]:
        """(L_i), (r_i), (d_i), one per block."""
        return [per_block(self.name, n, parse_widths(self.name, n, getattr(self, n)), depth) for n in WIDTH_OPTIONS]

    def apply(self, model: nn.Module) -> None:
        blocks = pre_norm_blocks(model, self.name)
        lens, ranks, dims = self.widths(len(blocks))
        freeze_all(model)
        like = next(model.parameters())
        for block, rank, dim in zip(blocks, ranks, dims):
            if rank:
                block.attn.qkv = FusedLoRA(block.attn.qkv, rank, self.dropout, "effective")
            if dim:
                adapter = Bottleneck(model.embed_dim, dim, QuickGELU(), self.dropout, like)
                init_bottleneck(adapter, "effective")
                block.drop_path2 = AdapterAfterBranch(block.drop_path2, adapter)
        present = 0  # prompt tokens at the end of the sequence, where NOAH appends them
        for index, (length, replace) in enumerate(zip(lens, replaced_prompts(lens))):
            if length:
                prompts = self._new_prompts(length, model.embed_dim, like)
                model.blocks[index] = PromptReplacer(model.blocks[index], prompts, None, self.dropout, replace)
                present += length - replace
        if present:
            model.norm = PromptRemover(model.norm, None, present)

    @staticmethod
    def _new_prompts(length: int, dim: int, like: torch.Tensor) -> nn.Parameter:
        prompts = nn.Parameter(torch.empty(1, length, dim, device=like.device, dtype=like.dtype))
        bound = prompt_bound(SUPERNET_PROMPT_TOKENS, dim)
        nn.init.uniform_(prompts, -bound, bound)
        return prompts
