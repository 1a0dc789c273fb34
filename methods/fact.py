"""FacT: factor-tuning, tensor-train (`fact_tt`) and Tucker (`fact_tk`) (Jie & Deng, AAAI 2023)."""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from peftbench.anatomy import block_paths, block_width
from peftbench.errors import PeftbenchError

from ._fold import FoldableWrapper, fold_wrappers
from ._registry import register_method
from .base import Method, freeze_all, option

SLOTS_PER_BLOCK = 12  # FacT-TK: q, k, v, proj, then fc1 and fc2 as four slices each
ADAPTED = (("attn.qkv", "qkv", 0), ("attn.proj", "proj", 3), ("mlp.fc1", "fc1", 4), ("mlp.fc2", "fc2", 8))


def stacks(model: nn.Module) -> list[tuple[str, int, list[str]]]:
    """FacT's tensors: each run of consecutive equal-width blocks, as (the module that owns the run, the
    width, its block paths). A ViT is one run (owned by the model); a Swin one per stage (owned by `layers.s`), the
    paper's partitioned tensorization (Sec. 4.3)."""
    runs: list[tuple[int, list[str]]] = []
    for path in block_paths(model):
        width = block_width(model.get_submodule(path))
        if runs and runs[-1][0] == width:
            runs[-1][1].append(path)
        else:
            runs.append((width, [path]))
    return [(paths[0].rpartition(".blocks.")[0], width, paths) for width, paths in runs]


class Factors(nn.Module):
    """The factors every layer of a run shares: U (r x D) into the rank-r space and V (D x r) back, zero at
    init so that training starts at the pretrained function; FacT-TK adds the Tucker core C (r x r x r)
    and the per-slot loadings P (r x 12 depth)."""

    def __init__(self, width: int, rank: int, depth: int, tucker: bool, like: torch.Tensor):
        super().__init__()
        factory = {"device": like.device, "dtype": like.dtype}
        self.u = nn.Linear(width, rank, bias=False, **factory)  # nn.Linear's own init, as their FacTu
        self.v = nn.Linear(rank, width, bias=False, **factory)
        nn.init.zeros_(self.v.weight)
        if tucker:
            self.core = nn.Parameter(torch.empty(rank, rank, rank, **factory))
            self.loadings = nn.Parameter(torch.empty(rank, SLOTS_PER_BLOCK * depth, **factory))
            nn.init.xavier_uniform_(self.core)
            nn.init.xavier_uniform_(self.loadings)

    def slots(self, first: int, count: int) -> torch.Tensor:
        """FacT-TK: the (r, r, count) cores of slots first .. first + count - 1, C ×₃ P."""
        return self.core @ self.loadings[:, first : first + count]


class FacTLinear(FoldableWrapper):
    """A frozen Linear (`layer`) plus s · V(drop(K(U x))) for each of its `kind`'s slots, where K is the
    slot's r-space map: one per q, k, v (fused qkv), one for proj, one 4r-wide map for fc1 (its output
    split into four D-wide chunks, each mapped back by V) and for fc2 (its input split into four chunks,
    each projected by U). The shared factors are held by reference (a tuple), not registered here."""

    def __init__(self, layer: nn.Linear, kind: str, factors: Factors, scale: float, dropout: float, tucker: bool,
                 first_slot: int):  # fmt: skip
        super().__init__()
        self.layer, self.kind, self.scale, self.tucker, self.first_slot = layer, kind, scale, tucker, first_slot
        self.shared = (factors,)
        self.dropout = nn.Dropout(dropout)
        rank = factors.u.out_features
        if not tucker:  # FacT-TT: this layer's own cores, nn.Linear's init (their q_FacTs, ..., fc2_FacTs)
            shapes = {
                "qkv": [(rank, rank)] * 3,
                "proj": [(rank, rank)],
                "fc1": [(4 * rank, rank)],
                "fc2": [(rank, 4 * rank)],
            }
            like = layer.weight
            self.cores = nn.ParameterList(
                nn.Parameter(nn.init.kaiming_uniform_(torch.empty(s, device=like.device, dtype=like.dtype), a=math.sqrt(5)))
                for s in shapes[kind]
            )  # fmt: skip

    def maps(self) -> list[torch.Tensor]:
        """Each slot's K, applied as `h @ K` in the rank-r space (TT: the core's transpose; TK: C ×₃ P)."""
        if not self.tucker:
            return [core.t() for core in self.cores]
        factors, rank = self.shared[0], self.shared[0].u.out_features
        if self.kind == "qkv":
            cores = factors.slots(self.first_slot, 3)
            return [cores[:, :, j] for j in range(3)]
        if self.kind == "proj":
            return [factors.slots(self.first_slot, 1)[:, :, 0]]
        cores = factors.slots(self.first_slot, 4).reshape(rank, 4 * rank)  # fc1: r -> 4r; fc2: its transpose
        return [cores if self.kind == "fc1" else cores.t()]

    def update(self, x: torch.Tensor) -> torch.Tensor:
        factors = self.shared[0]
        width = factors.u.in_features
        if self.kind == "fc2":
            u = factors.u(x.reshape(*x.shape[:-1], 4, width)).flatten(-2)
        else:
            u = factors.u(x)
        outputs = [self.dropout(u @ k) for k in self.maps()]
        if self.kind == "fc1":
            return factors.v(outputs[0].reshape(*x.shape[:-1], 4, -1)).flatten(-2) * self.scale
        return torch.cat([factors.v(o) for o in outputs], dim=-1) * self.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x) + self.update(x)

    def delta_weight(self) -> torch.Tensor:
        """The update as a weight (out x in), dropout being the identity at evaluation."""
        factors = self.shared[0]
        u, v, rank = factors.u.weight, factors.v.weight, factors.u.out_features
        maps = self.maps()
        if self.kind in ("qkv", "proj"):
            return torch.cat([v @ k.t() @ u for k in maps], dim=0) * self.scale
        k = maps[0]
        if self.kind == "fc1":  # chunk i of the output: V (K[:, i])ᵀ U
            return torch.cat([v @ k[:, i * rank : (i + 1) * rank].t() @ u for i in range(4)], dim=0) * self.scale
        return torch.cat([v @ k[i * rank : (i + 1) * rank].t() @ u for i in range(4)], dim=1) * self.scale

    @torch.no_grad()
    def fold(self) -> nn.Linear:
        self.layer.weight.add_(self.delta_weight().to(self.layer.weight.dtype))
        return self.layer


@dataclasses.dataclass
class _FacT(Method):
    """Shared implementation of FacT-TT and FacT-TK (see the registered subclasses)."""

    rank: int = option(8, "r, the rank of the factorised update (their per-task `rank`)")
    scale: float = option(1.0, "s, the update's fixed factor (their per-task `scale`)")
    dropout: float = option(0.1, "dropout in the rank-r space, after the core (their nn.Dropout(0.1))")

    tucker = False
    mergeable = True
    families = ("vit", "swin")
    not_defined_because = "its paper defines it on ViT and Swin: a ConvNeXt has no attention, Eva's MLP no fc1/fc2 pair"
    # FacT/fact_tt.py and fact_tk.py: AdamW over the FacT factors and the head (one group, all decayed),
    # lr 1e-3, wd 1e-4, timm's CosineLRScheduler (t_initial 100, warm-up 10 from 1e-6, lr_min 1e-5)
    # stepped `scheduler.step(ep)` after each epoch, 100 epochs, drop path 0.1.
    train_defaults = {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 1e-4, "warmup_lr": 1e-6, "min_lr": 1e-5,
                      "scheduler": "timm-epoch", "drop_path": 0.1}  # fmt: skip

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise PeftbenchError(f"{self.name}: rank must be at least 1, got {self.rank}")
        if not 0 <= self.dropout < 1:
            raise PeftbenchError(f"{self.name}: dropout must be in [0, 1), got {self.dropout}")

    def apply(self, model: nn.Module) -> None:
        runs = stacks(model)
        for _, width, paths in runs:
            for path in paths:
                if model.get_submodule(path).mlp.fc1.out_features != 4 * width:
                    raise PeftbenchError(f"{self.name} splits the MLP into 4 width-sized chunks: it needs mlp_ratio 4")
        freeze_all(model)
        like = next(model.parameters())
        for owner, width, paths in runs:  # one set of factors per run, held by the run's owner as `fact`
            factors = Factors(width, self.rank, len(paths), self.tucker, like)
            model.get_submodule(owner).fact = factors
            for index, path in enumerate(paths):
                block = model.get_submodule(path)
                for linear, kind, offset in ADAPTED:
                    slot = SLOTS_PER_BLOCK * index + offset
                    wrapped = FacTLinear(block.get_submodule(linear), kind, factors, self.scale, self.dropout,
                                         self.tucker, slot)  # fmt: skip
                    block.set_submodule(linear, wrapped)

    def no_weight_decay(self, model: nn.Module) -> set[str]:
        return set()  # their AdamW has one group: every trainable tensor, the head's bias included, is decayed

    def merge(self, model: nn.Module) -> nn.Module:
        merged = fold_wrappers(model)
        for owner, _, _ in stacks(merged):
            del merged.get_submodule(owner).fact  # folded into every layer: a plain timm model with timm's keys
        return merged


@register_method("fact_tt")
@dataclasses.dataclass
class FacTTT(_FacT):
    """FacT-TT, factor-tuning with a tensor-train format (Jie & Deng, AAAI 2023, Sec. 3.3, Eq. 7).

    Equation: every layer's update is s · V Σ U with U (r x D) and V (D x r) shared by all layers and a
    small core Σ per adapted matrix: for q, k, v and the attention output, Σ is r x r; fc1's update is
    four D x D blocks V Σᵢ U (its 4r x r core split row-wise), fc2's four blocks over its input chunks.
    Dropout (0.1) acts in the rank-r space, after the core, in training (one mask per q, k, v, proj,
    fc1 and fc2 call, as their forward). Matched to JieShibo/PETL-ViT, FacT/fact_tt.py (`set_FacT`,
    `fact_forward_attn`, `fact_forward_mlp`); their per-task rank and scale are configs/tt/<task>.yaml.
    Init: U, the cores: nn.Linear's default (Kaiming-uniform a = √5); V: zeros.
    Trainable: U, V, and per block r² for each of q, k, v, proj and 4r² for each of fc1 and fc2, plus
    the head: 2Dr + 12 r² depth; ViT-B/16, r = 8: 21,504 without the head.
    Swin (Sec. 4.3, "partitioned tensorization"): each stage is its own tensor with its own U and V (its
    blocks' width), so Σ over stages of 2 D_s r + 12 r² depth_s; Swin-B, r = 16: 135,168 without the
    head, the 0.135 M of their Table 2 (FacT-TT16). No Swin code is released: built from that section.
    Weight decay: one group over every trainable tensor (their AdamW(trainable, wd)).
    Merge: the update is linear in the input: W' = W + s V Σ U per matrix, a plain timm ViT.
    Deviations: their loader drops the last partial batch (drop_last=True); ours trains on it; they
    report the best test top-1 of every 10th epoch (`--protocol best-test --eval-every 10`).
    """

    summary = "FacT-TT: a tensor-train factorised update shared across layers (q, k, v, proj, fc1, fc2)"


@register_method("fact_tk")
@dataclasses.dataclass
class FacTTK(_FacT):
    """FacT-TK, factor-tuning with a Tucker format (Jie & Deng, AAAI 2023, Sec. 3.3, Eq. 8).

    Equation: the 12 depth matrices' updates form a tensor factorised as C ×₁ U ×₂ V ×₃ P: U (r x D) and
    V (D x r) shared, a core C (r x r x r), and loadings P (r x 12 depth), one column per slot (per block:
    q, k, v, proj, then fc1's and fc2's four chunks); slot j's r-space map is C ×₃ P[:, j]. fc1 and fc2
    take their four slots as one r x 4r map with the reshape their forward does. Dropout (0.1) in the
    rank-r space. Matched to JieShibo/PETL-ViT, FacT/fact_tk.py (`set_FacT`: FacTp (r x 144) and FacTc
    (r x r x r) with xavier_uniform_; `fact_forward_attn`, `fact_forward_mlp`); their per-task rank and
    scale are configs/tk/<task>.yaml.
    Init: U nn.Linear's default, V zeros, C and P xavier_uniform_.
    Trainable: 2Dr + r³ + 12 depth r and the head; ViT-B/16, r = 32: 86,528 without the head.
    Swin: per stage its own U, V, C and P (Sec. 4.3's partition; the paper reports FacT-TT on Swin only).
    Weight decay, merge and deviations as FacT-TT.
    """

    summary = "FacT-TK: a Tucker-factorised update of every layer's matrices (shared U, V, core, loadings)"
    tucker = True
