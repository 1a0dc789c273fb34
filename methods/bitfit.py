"""BitFit: only the bias terms train (Ben Zaken et al., ACL 2022)."""

from __future__ import annotations

import dataclasses

from torch import nn

from peftbench.anatomy import ALL_FAMILIES

from ._registry import register_method
from .base import Method, freeze_all


def bias_names(model: nn.Module) -> list[str]:
    """Names of every parameter called `bias`: Linear, LayerNorm and convolution biases alike."""
    return [name for name, _ in model.named_parameters() if name.rpartition(".")[2] == "bias"]


@register_method("bitfit")
@dataclasses.dataclass
class BitFit(Method):
    """BitFit (Ben Zaken et al., ACL 2022): fine-tune the bias terms, freeze every other weight.

    Equation: each layer keeps f(x) = W0 x + b (or LayerNorm's gamma0 * x_hat + b) with only b trained.
    Trainable: every bias of the backbone: all Linear biases (attn.qkv, attn.proj, mlp.fc1, mlp.fc2),
    the LayerNorm biases (norm1, norm2, the final norm, any other norm) and the patch-embedding
    convolution's bias; plus the head, which the engine keeps trainable. Init: the pretrained biases.
    Merge: the identity; the model is already a plain timm ViT.
    """

    summary = "BitFit: only the bias terms train"
    mergeable = True
    families = ALL_FAMILIES

    def apply(self, model: nn.Module) -> None:
        freeze_all(model)
        for name in bias_names(model):
            model.get_parameter(name).requires_grad_(True)
