"""BitFit: only the bias terms train (Ben Zaken et al., ACL 2022)."""

from __future__ import annotations

import dataclasses

from torch import nn

from peftbench.anatomy import ALL_FAMILIES

from ._registry import register_method
from .base import Method, freeze_all, option


def bias_names(model: nn.Module) -> list[str]:
    """Names of every parameter called `bias`: Linear, LayerNorm and convolution biases alike."""
    return [name for name, _ in model.named_parameters() if name.rpartition(".")[2] == "bias"]


def position_bias_table_names(model: nn.Module) -> list[str]:
    """Swin's `relative_position_bias_table` of every window attention (none in other families)."""
    return [name for name, _ in model.named_parameters() if name.endswith("relative_position_bias_table")]


@register_method("bitfit")
@dataclasses.dataclass
class BitFit(Method):
    """BitFit (Ben Zaken et al., ACL 2022): fine-tune the bias terms, freeze every other weight.

    Equation: each layer keeps f(x) = W0 x + b (or LayerNorm's gamma0 * x_hat + b) with only b trained.
    Trainable: every bias of the backbone: all Linear biases (attn.qkv, attn.proj, mlp.fc1, mlp.fc2),
    the LayerNorm biases (norm1, norm2, the final norm, any other norm) and the patch-embedding
    convolution's bias; plus the head, which the engine keeps trainable. Init: the pretrained biases.
    On Swin also every window attention's relative position bias table (`position_bias_tables`), as the
    published Swin rows train it: KMnP/vpt@4410440 src/models/vit_models.py `Swin.build_backbone`, transfer
    type `tinytl-bias`, freezes what lacks "bias" in its name. Swin-B: 137,216 biases + 63,544 table
    entries = 200,760 without the head, the 0.201 M that FacT (arXiv 2212.03145) Table 2 prints for it.
    Merge: the identity; the model is already a plain timm backbone.
    """

    summary = "BitFit: only the bias terms train"
    mergeable = True
    families = ALL_FAMILIES

    position_bias_tables: bool = option(
        True, "also train Swin's relative position bias tables, as VPT's 'bias'-in-name rule does", key_neutral=False
    )

    def apply(self, model: nn.Module) -> None:
        freeze_all(model)
        tables = position_bias_table_names(model) if self.position_bias_tables else []
        for name in bias_names(model) + tables:
            model.get_parameter(name).requires_grad_(True)
