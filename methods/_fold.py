"""The one fold mechanism of every mergeable method: wrappers that fold back into plain layers.

A method whose update is linear in the frozen weights (LoRA, SSF, RLRR, ...) replaces layers by
`FoldableWrapper`s; `fold_wrappers` (the default `Method.merge`) returns a deep copy in which every
wrapper is replaced by the layer its `fold()` gives, so the copy is a plain timm ViT with timm's
state-dict keys. A model without wrappers (full, linear, BitFit) is already plain and comes back as is.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

from torch import nn


class FoldableWrapper(nn.Module):
    """Stands in for a frozen layer; `fold()` returns that layer's type with the adaptation folded in."""

    def fold(self) -> nn.Module:
        """The plain layer with the trainable parameters folded into its weights (may modify the wrapped layer)."""
        raise NotImplementedError


def wrap(model: nn.Module, path: str, make: Callable[[nn.Module], FoldableWrapper]) -> None:
    """Replace the submodule at `path` by `make(submodule)`."""
    model.set_submodule(path, make(model.get_submodule(path)))


def fold_wrappers(model: nn.Module) -> nn.Module:
    """`model` with every wrapper folded: a deep copy (`model` is untouched), or `model` itself without wrappers."""
    if not any(isinstance(m, FoldableWrapper) for m in model.modules()):
        return model
    merged = copy.deepcopy(model)
    wrappers = [(name, m) for name, m in merged.named_modules() if isinstance(m, FoldableWrapper)]
    for name, wrapper in wrappers:
        merged.set_submodule(name, wrapper.fold())
    return merged
