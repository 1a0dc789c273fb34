"""LoRA on the query and value projections of every block (Hu et al., ICLR 2022)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from peftbench.anatomy import attentions
from peftbench.errors import PeftbenchError

from ._fold import FoldableWrapper
from ._registry import register_method
from .base import Method, freeze_all, option


class LowRankQKV(FoldableWrapper):
    """A fused qkv `nn.Linear`, kept frozen as `base_layer`, plus a trainable low-rank weight update.

    Subclasses define `forward` and `delta_weight()` (the update of `base_layer.weight`, peft's
    `get_delta_weight`); `fold()` returns a plain `nn.Linear` with the update folded in.
    """

    def __init__(self, base_layer: nn.Linear) -> None:
        super().__init__()
        if base_layer.out_features % 3:
            raise PeftbenchError(f"a fused qkv Linear has 3 x width outputs, got {base_layer.out_features}")
        self.base_layer = base_layer
        self.width = base_layer.out_features // 3  # rows per projection: q, k, v in this order

    def factory(self) -> dict[str, torch.device | torch.dtype]:
        """Device and dtype of the adapted weight, for new parameters (works on `meta` too)."""
        return {"device": self.base_layer.weight.device, "dtype": self.base_layer.weight.dtype}

    def delta_weight(self) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def fold(self) -> nn.Linear:
        """A plain `nn.Linear` with weight W0 + delta_weight() and the original bias."""
        base = self.base_layer
        linear = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None, **self.factory())
        linear.weight.copy_(base.weight + self.delta_weight())
        if base.bias is not None:
            linear.bias.copy_(base.bias)
        linear.requires_grad_(False)
        return linear


def wrap_qkv(model: nn.Module, wrap: Callable[[nn.Linear], LowRankQKV]) -> None:
    """Replace the fused `attn.qkv` of every block (vit, swin, eva: anatomy.attentions) by `wrap(qkv)`."""
    for attention in attentions(model):
        if attention.qkv is None:
            raise PeftbenchError(f"{attention.proj.rsplit('.', 2)[0]} has separate q, k, v projections, no fused qkv")
        wrap_linear(model, attention.qkv, wrap)


def wrap_linear(model: nn.Module, path: str, make: Callable[[nn.Linear], nn.Module]) -> None:
    """Replace the Linear at `path` by `make(linear)`; a one-line error where it is no Linear."""
    layer = model.get_submodule(path)
    if not isinstance(layer, nn.Linear):
        raise PeftbenchError(f"{path} is a {type(layer).__name__}, not a Linear to adapt (already adapted?)")
    model.set_submodule(path, make(layer))


class LoRAQueryValue(LowRankQKV):
    """LoRA on the q and v row blocks of a fused qkv Linear; the k rows stay exactly as they were.

    h_q = W_q x + s B_q A_q drop(x), h_v = W_v x + s B_v A_v drop(x), h_k = W_k x, with s = alpha / r,
    A: (r x in), B: (width x r), as `lora_A["q"]`, `lora_B["q"]`, `lora_A["v"]`, `lora_B["v"]`.
    """

    PROJECTIONS = ("q", "v")

    def __init__(
        self, base_layer: nn.Linear, rank: int, alpha: float, dropout: float, shared_mask: bool = False
    ) -> None:
        super().__init__(base_layer)
        self.shared_mask = shared_mask
        self.scaling = alpha / rank
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        factory = self.factory()
        self.lora_A = nn.ParameterDict(
            {p: nn.Parameter(torch.empty(rank, base_layer.in_features, **factory)) for p in self.PROJECTIONS}
        )
        self.lora_B = nn.ParameterDict(
            {p: nn.Parameter(torch.zeros(self.width, rank, **factory)) for p in self.PROJECTIONS}
        )
        for a in self.lora_A.values():
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))  # as peft / microsoft/LoRA; B stays zero

    def _update(self, x: torch.Tensor, projection: str) -> torch.Tensor:
        return F.linear(F.linear(x, self.lora_A[projection]), self.lora_B[projection]) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.base_layer(x).chunk(3, dim=-1)
        h_q = self.dropout(x)  # peft's separate q and v layers draw a mask each
        h_v = h_q if self.shared_mask else self.dropout(x)
        return torch.cat((q + self._update(h_q, "q"), k, v + self._update(h_v, "v")), dim=-1)

    def delta_weight(self) -> torch.Tensor:
        """The (3 width x in) update: s B_q A_q on the q rows, zeros on k, s B_v A_v on v."""
        q, v = (self.lora_B[p] @ self.lora_A[p] * self.scaling for p in self.PROJECTIONS)
        return torch.cat((q, torch.zeros_like(q), v), dim=0)


class LoRALinear(FoldableWrapper):
    """LoRA on a whole Linear (a separate q or v projection, EVA-02): h = W0 x + s B A drop(x),
    A (r x in) Kaiming-uniform with a = sqrt(5), B (out x r) zeros, s = alpha / r (peft's `Linear`)."""

    def __init__(self, base_layer: nn.Linear, rank: int, alpha: float, dropout: float) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.scaling = alpha / rank
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        factory = {"device": base_layer.weight.device, "dtype": base_layer.weight.dtype}
        self.lora_A = nn.Parameter(torch.empty(rank, base_layer.in_features, **factory))
        self.lora_B = nn.Parameter(torch.zeros(base_layer.out_features, rank, **factory))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        update = F.linear(F.linear(self.dropout(x), self.lora_A), self.lora_B)
        return self.base_layer(x) + update * self.scaling

    @torch.no_grad()
    def fold(self) -> nn.Linear:
        self.base_layer.weight.add_(self.lora_B @ self.lora_A * self.scaling)
        return self.base_layer


def check_rank_and_dropout(method: str, rank: int, dropout: float) -> None:
    """The options both LoRA variants share, checked with a message naming the method."""
    if rank < 1:
        raise PeftbenchError(f"{method}: rank must be at least 1, got {rank}")
    if not 0 <= dropout < 1:
        raise PeftbenchError(f"{method}: dropout must be in [0, 1), got {dropout}")


@register_method("lora")
@dataclasses.dataclass
class LoRA(Method):
    """LoRA, low-rank adaptation (Hu et al., ICLR 2022), on W_q and W_v of every block.

    Equation (Eq. 3): h = W0 x + (alpha / r) B A x, applied to the query and value projections
    only (the paper's setting, Sec. 7.1); timm fuses q, k, v into one `attn.qkv` Linear, so the update
    goes to its q and v row slices and the k rows stay exactly the pretrained ones. `dropout` acts on
    the input of the low-rank branch (peft's `lora_dropout`).
    Init: A (r x in) Kaiming-uniform with a = sqrt(5), B (out x r) zeros, so training starts at the
    pretrained function (peft `LoraLayer.reset_lora_parameters`, microsoft/LoRA `loralib.Linear`).
    Trainable: the A and B matrices (plus the head, which the engine keeps trainable).
    Merge: W = W0 + (alpha / r) B A in the q and v row slices of each `attn.qkv`, giving a plain timm ViT.
    Families: vit, swin (each window attention's fused qkv) and eva (DINOv3's fused qkv; EVA-02's
    separate `q_proj` and `v_proj`, each a `LoRALinear`, whose masks are their own as peft's).
    """

    summary = "LoRA (Hu et al. 2022) on the query and value projections"
    mergeable = True
    families = ("vit", "swin", "eva")
    not_defined_because = "it adapts attention projections, which a ConvNeXt has none of"

    rank: int = option(8, "r, the rank of each low-rank update (A: r x in, B: out x r)")
    alpha: float = option(8.0, "alpha; the update is scaled by alpha / r")
    dropout: float = option(0.0, "dropout on the input of the low-rank branch (peft's lora_dropout)")
    dropout_masks: str = option(
        "per_projection",
        "per_projection (peft: q and v draw their own masks) | shared (one mask)",
        key_neutral="shared",
    )

    def __post_init__(self) -> None:
        check_rank_and_dropout(self.name, self.rank, self.dropout)
        if self.dropout_masks not in ("per_projection", "shared"):
            raise PeftbenchError(
                f"lora: dropout_masks must be 'per_projection' or 'shared', got '{self.dropout_masks}'"
            )

    def apply(self, model: nn.Module) -> None:
        freeze_all(model)
        shared = self.dropout_masks == "shared"
        for attention in attentions(model):
            if attention.qkv:
                wrap_linear(
                    model, attention.qkv, lambda qkv: LoRAQueryValue(qkv, self.rank, self.alpha, self.dropout, shared)
                )
            else:
                for path in (attention.q, attention.v):
                    wrap_linear(model, path, lambda linear: LoRALinear(linear, self.rank, self.alpha, self.dropout))
