"""Visual Prompt Tuning (Jia et al., ECCV 2022): learnable tokens in the input sequence, shallow or deep.

The prompts enter through the model's own modules, without a copy of timm's forward:
`norm_pre` (an Identity in standard ViTs) is wrapped to insert the prompts after the prefix
tokens (CLS and register tokens), i.e. after the position embedding; for VPT-deep every later
block is wrapped to overwrite the previous block's prompt outputs; the final `norm` is wrapped to
drop the prompt outputs, so `forward_features` returns the plain token layout and every pooling
of `forward_head` (CLS token, average, attention pooling) sees exactly the tokens it expects.
`model.num_prefix_tokens` is unchanged (prompts have no position embedding).
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import torch
from torch import nn

from peftbench.anatomy import block_paths, block_width, family_of
from peftbench.errors import PeftbenchError

from ._registry import register_method
from .base import Method, freeze_all, option
from .vpt_swin import PromptedMerging, PromptedSwinBlock, PromptPool, SwinPromptInserter


def prompt_init_bound(patch_size: tuple[int, int], dim: int) -> float:
    """VPT's uniform bound: Xavier's sqrt(6 / (fan_in + fan_out)) with the patch embedding's
    fan-in (3 channels x patch area) and the prompt width as fan-out."""
    return math.sqrt(6.0 / (3 * patch_size[0] * patch_size[1] + dim))


def splice(x: torch.Tensor, prompts: torch.Tensor, at: int, replace: int) -> torch.Tensor:
    """`x` (B, N, D) with `prompts` (B, L, D) placed at token `at`, in place of `replace` tokens."""
    return torch.cat((x[:, :at], prompts, x[:, at + replace :]), dim=1)


def start(x: torch.Tensor, at: int | None, count: int) -> int:
    """Where the prompt slice of `count` tokens begins: token `at`, or the last `count` tokens if `at` is None."""
    return x.shape[1] - count if at is None else at


class _Prompted(nn.Module):
    """Holds one set of prompts (1, L, D) and VPT's prompt dropout."""

    def __init__(self, prompts: nn.Parameter, at: int | None, dropout: float):
        super().__init__()
        self.prompts = prompts
        self.at = at
        self.dropout = nn.Dropout(dropout)

    def batch_prompts(self, batch: int) -> torch.Tensor:
        # expanded first, so dropout draws an independent mask per image (as VPT's code does)
        return self.dropout(self.prompts.expand(batch, -1, -1))


class PromptInserter(_Prompted):
    """Replaces `model.norm_pre`: inserts the prompts after the prefix tokens, then runs the module
    that was there (Identity, or the pre-norm of CLIP-style ViTs)."""

    def __init__(self, inner: nn.Module, prompts: nn.Parameter, at: int, dropout: float):
        super().__init__(prompts, at, dropout)
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(splice(x, self.batch_prompts(x.shape[0]), self.at, 0))


class PromptReplacer(_Prompted):
    """Wraps a block (VPT-deep): its input's prompt slice (`replace` tokens from `at`, or the last ones
    if `at` is None; by default as many as its own prompts) becomes this block's own prompts."""

    def __init__(
        self, block: nn.Module, prompts: nn.Parameter, at: int | None, dropout: float, replace: int | None = None
    ):
        super().__init__(prompts, at, dropout)
        self.block = block
        self.replace = prompts.shape[1] if replace is None else replace

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        prompts = self.batch_prompts(x.shape[0])
        return self.block(splice(x, prompts, start(x, self.at, self.replace), self.replace), *args, **kwargs)


class PromptRemover(nn.Module):
    """Wraps the final `model.norm` (per token) and drops the `length` prompt outputs after it (from
    token `at`, or the last ones if `at` is None)."""

    def __init__(self, inner: nn.Module, at: int | None, length: int):
        super().__init__()
        self.inner = inner
        self.at = at
        self.length = length

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inner(x)
        at = start(x, self.at, self.length)
        return torch.cat((x[:, :at], x[:, at + self.length :]), dim=1)


@dataclasses.dataclass
class _VisualPromptTuning(Method):
    """Shared implementation of VPT-shallow and VPT-deep (see the registered subclasses)."""

    prompt_len: int = option(10, "L, the number of prompt tokens (per block for vpt_deep)")
    prompt_dropout: float = option(0.0, "dropout on the prompts as they enter the sequence")

    deep: ClassVar[bool] = False
    # VPT's configs/base-prompt.yaml: SGD, momentum 0.9 (100 epochs, 10 warm-up: the engine's own
    # defaults). lr and weight decay are searched per task; these are the pair of VPT's released
    # VTAB-dmlab and -eurosat runs (demo.ipynb: base lr 1.0, lr = base lr x batch / 256 = 0.25 at
    # the engine's batch size 64; weight decay 0.001).
    # Its schedule: WarmupCosineSchedule (src/solver/lr_scheduler.py) stepped once per epoch by the trainer.
    train_defaults = {"optimizer": "sgd", "momentum": 0.9, "lr": 0.25, "weight_decay": 1e-3, "scheduler": "vpt-epoch"}
    mergeable = False
    families = ("vit", "swin")
    not_defined_because = "a ConvNeXt has no tokens, and Eva's RoPE would rotate the prompts as patches"
    # VPT's tune_vtab.py grid: base lr (per 256 images, scaled by batch / 256) x weight decay.
    tune_grid = {"lr": (50.0, 25.0, 10.0, 5.0, 2.5, 1.0, 0.5, 0.25, 0.1, 0.05), "weight_decay": (0.01, 1e-3, 1e-4, 0.0)}
    tune_lr_per_256 = True

    def __post_init__(self) -> None:
        if self.prompt_len < 1:
            raise PeftbenchError(f"{self.name}: prompt_len must be at least 1, got {self.prompt_len}")
        if not 0.0 <= self.prompt_dropout < 1.0:
            raise PeftbenchError(f"{self.name}: prompt_dropout must be in [0, 1), got {self.prompt_dropout}")

    def apply(self, model: nn.Module) -> None:
        freeze_all(model)
        if family_of(model) == "swin":
            self._apply_to_swin(model)
            return
        at = model.num_prefix_tokens
        shape = self._prompt_shape(model)
        model.norm_pre = PromptInserter(model.norm_pre, self._new_prompts(model, *shape), at, self.prompt_dropout)
        if self.deep:  # block 0 reads the inserted prompts; blocks 1.. get their own
            for index in range(1, len(model.blocks)):
                model.blocks[index] = PromptReplacer(
                    model.blocks[index], self._new_prompts(model, *shape), at, self.prompt_dropout
                )
        model.norm = PromptRemover(model.norm, at, self.prompt_len)

    def _apply_to_swin(self, model: nn.Module) -> None:
        """VPT's Swin variant (methods/vpt_swin.py): the prompts travel beside the token grid."""
        shape = self._prompt_shape(model)  # read before the patch embedding is wrapped
        model.patch_embed = SwinPromptInserter(model.patch_embed, self._new_prompts(model, *shape), self.prompt_dropout)
        first = True
        for stage in model.layers:
            owners = []
            for index, block in enumerate(stage.blocks):  # deep: own prompts in every block but the first
                own = self._new_prompts(model, block_width(block), shape[1]) if self.deep and not first else None
                stage.blocks[index] = PromptedSwinBlock(block, own)
                owners += [stage.blocks[index]] if own is not None else []
                first = False
            stage.downsample = PromptedMerging(stage.downsample, owners, self.prompt_dropout)
        model.norm = PromptPool(model.norm)

    @staticmethod
    def _prompt_shape(model: nn.Module) -> tuple[int, float]:
        """The patch embedding's width and VPT's init bound; a Swin's deeper prompts keep that bound, as
        their code draws every stage's prompts with the same `val`."""
        width = block_width(model.get_submodule(block_paths(model)[0]))
        return width, prompt_init_bound(tuple(model.patch_embed.patch_size), width)

    def _new_prompts(self, model: nn.Module, width: int, bound: float) -> nn.Parameter:
        """Prompts (1, L, width) on the weights' device and dtype, uniform in (-bound, bound), VPT's init."""
        like = next(model.parameters())
        prompts = nn.Parameter(torch.empty(1, self.prompt_len, width, device=like.device, dtype=like.dtype))
        nn.init.uniform_(prompts, -bound, bound)
        return prompts


@register_method("vpt_shallow")
@dataclasses.dataclass
class VPTShallow(_VisualPromptTuning):
    """VPT-shallow (Jia et al., ECCV 2022, Eq. 1-2): `prompt_len` learnable tokens P are inserted
    once, after the CLS token: [x_1, Z_1, E_1] = L_1([x_0, P, E_0]), with E_0 the position-embedded
    patch tokens (prompts get no position embedding); the later blocks run unchanged.

    Init: uniform(-v, v), v = sqrt(6 / (3 * patch_h * patch_w + D)), as the released code
    (KMnP/vpt, src/models/vit_prompt/vit.py, PromptedTransformer.__init__ and incorporate_prompt:
    `val = math.sqrt(6. / float(3 * reduce(mul, patch_size, 1) + prompt_dim))`,
    `nn.init.uniform_(self.prompt_embeddings.data, -val, val)`); prompt dropout on the expanded
    prompts, 0 by default ("we don't use dropout for VPT-shallow", the repository's demo.ipynb).

    Trainable: the prompts (L x D) and the head. Not mergeable: the prompts lengthen the sequence
    every attention layer sees, which no change of the frozen weights reproduces.
    On Swin: VPT's Swin variant (methods/vpt_swin.py), the prompts in every window of every block,
    merged with the patches between stages; Swin-B: L x 128 without the head.
    """

    summary = "VPT-shallow: learnable prompt tokens inserted after the CLS token at the input"


@register_method("vpt_deep")
@dataclasses.dataclass
class VPTDeep(_VisualPromptTuning):
    """VPT-deep (Jia et al., ECCV 2022, Eq. 3): every block i has its own prompts P_i, placed after
    the CLS token in place of the previous block's prompt outputs:
    [x_i, _, E_i] = L_i([x_{i-1}, P_{i-1}, E_{i-1}]) for every block, the first included.

    Init and dropout as VPT's code (KMnP/vpt, src/models/vit_prompt/vit.py: the same uniform bound
    for `prompt_embeddings` and `deep_prompt_embeddings`, forward_deep_prompt replacing
    `hidden_states[:, 1:1+num_tokens]`); prompt dropout 0.1 by default, as in the repository's
    released VTAB runs (demo.ipynb, `MODEL.PROMPT.DROPOUT "0.1"` with `MODEL.PROMPT.DEEP "True"`).

    Trainable: depth x L x D prompt parameters and the head. Not mergeable, as VPT-shallow.
    On Swin (methods/vpt_swin.py): every block but the first replaces the prompts with its own, at its
    stage's width; Swin-B: L x 12,032 without the head (L = 10: 120,320).
    """

    prompt_dropout: float = option(0.1, "dropout on the prompts as they enter the sequence")

    summary = "VPT-deep: fresh learnable prompt tokens before every block"
    deep = True
