"""NOAH's LoRA baseline: one unscaled low-rank update of the whole fused qkv projection."""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from peftbench.errors import PeftbenchError

from ._registry import register_method
from .base import Method, freeze_all, option
from .lora import LowRankQKV, check_rank_and_dropout, wrap_qkv

INIT_STD = 0.02  # timm's ViT Linear init, which NOAH's LoRA matrices end up with (see LoRAQKV)


class FusedLoRA(LowRankQKV):
    """qkv(x) + drop(x) A B over all 3 x width outputs (q, k and v), with no scaling.

    A: (in x r) and B: (r x 3 width), as `lora_A`, `lora_B`; the weight update is (A B)^T.
    """

    def __init__(self, base_layer: nn.Linear, rank: int, dropout: float, init: str) -> None:
        super().__init__(base_layer)
        factory = self.factory()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.lora_A = nn.Parameter(torch.empty(base_layer.in_features, rank, **factory))
        self.lora_B = nn.Parameter(torch.empty(rank, base_layer.out_features, **factory))
        if init == "effective":
            for matrix in (self.lora_A, self.lora_B):
                nn.init.trunc_normal_(matrix, std=INIT_STD, a=-2.0, b=2.0)
        else:  # "as_written": nn.Linear(dim, r) with Kaiming-uniform a=sqrt(5), stored transposed; B zeros
            nn.init.kaiming_uniform_(self.lora_A.T, a=math.sqrt(5))
            nn.init.zeros_(self.lora_B)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base_layer(x) + self.dropout(x) @ self.lora_A @ self.lora_B

    def delta_weight(self) -> torch.Tensor:
        return (self.lora_A @ self.lora_B).T


@register_method("lora_qkv")
@dataclasses.dataclass
class LoRAQKV(Method):
    """LoRA as run by NOAH (Zhang et al., "Neural Prompt Search", 2022): its "LoRA" VTAB-1k rows.

    Equation: qkv(x) = W0 x + b + drop(x) A B, i.e. W = W0 + (A B)^T, with ONE A (in x r) and ONE
    B (r x 3 dim) over the whole fused qkv (q, k AND v), no alpha / r scaling, and dropout (0.1) on the
    low-rank branch's input. Same parameter count as `lora` at equal rank, different function.
    Matched code: github.com/ZhangYuanhan-AI/NOAH, `model/supernet_vision_transformer_timm.py`
    (`Attention`: `LoRA_a = nn.Linear(dim, r)`, `LoRA_b = nn.Linear(r, 3 dim)`, delta
    `LoRA_b(LoRA_a(LoRA_drop(x)))` added to q, k, v; `--drop_rate_LoRA` 0.1 in `supernet_train_prompt.py`;
    rank 8 in `experiments/LoRA/ViT-B_prompt_lora_8.yaml`).
    Init: that `Attention` sets Kaiming-uniform A and zero B, but `VisionTransformer.__init__` then calls
    `init_weights('')`, whose `self.apply(_init_vit_weights)` re-initialises EVERY `nn.Linear` without a
    `head`/`pre_logits` name, the LoRA pair included, to trunc_normal(std 0.02, cut at +-2); the
    pretrained checkpoint has no LoRA keys, so this is what training starts from: both A and B
    trunc-normal(0.02), a small non-zero initial update. We reproduce that effective init by default
    (`init=effective`); `--set init=as_written` gives the code as written (an identity at init).
    Trainable: A and B (plus the head, which the engine keeps trainable).
    Merge: W = W0 + (A B)^T on each `attn.qkv` (dropout is the identity at eval), a plain timm ViT.
    """

    summary = "LoRA as in NOAH's code: one unscaled low-rank update of the fused qkv (q, k, v)"
    mergeable = True

    rank: int = option(8, "r, the rank of the one update of the fused qkv (A: in x r, B: r x 3 width)")
    dropout: float = option(0.1, "dropout on the low-rank branch's input (NOAH's --drop_rate_LoRA)")
    init: str = option("effective", "effective (what NOAH's runs started from: both trunc-normal 0.02) | as_written")

    def __post_init__(self) -> None:
        if self.init not in ("effective", "as_written"):
            raise PeftbenchError(f"lora_qkv: init must be 'effective' or 'as_written', got '{self.init}'")
        check_rank_and_dropout(self.name, self.rank, self.dropout)

    def apply(self, model: nn.Module) -> None:
        freeze_all(model)
        wrap_qkv(model, lambda qkv: FusedLoRA(qkv, self.rank, self.dropout, self.init))
