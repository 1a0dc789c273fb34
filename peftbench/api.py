"""The public Python API: a method applied to a backbone, and merging it back into a plain ViT."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from . import anatomy, backbone
from .errors import PeftbenchError
from .methods import Method, get_method

METHOD_ATTRIBUTE = "peftbench_method"


def build_model(
    method: str | Method,
    model_name: str,
    num_classes: int,
    weights: str | Path | None = None,
    pretrained: bool = True,
    **options,
) -> nn.Module:
    """A timm backbone (ViT, Swin, ConvNeXt, Eva) with a zero-initialised `num_classes` head, adapted by `method`.

    `weights` loads a local checkpoint; otherwise `pretrained=True` uses the model's default weights
    (shipped with peftbench, or in timm's local cache) and raises when there are none — never a
    silent random initialisation; `pretrained=False` starts from random initialisation. Extra keyword
    arguments are the method's options (e.g. `rank=4`). The head always trains.
    """
    if isinstance(method, str):
        method = get_method(method)(**options)
    elif options:
        raise PeftbenchError("pass options either in the Method instance or as keywords, not both")
    choice = weights if weights is not None else ("default" if pretrained else None)
    model, _ = backbone.create_backbone(model_name, num_classes, choice)
    adapt(model, method)
    return model


def adapt(model: nn.Module, method: Method) -> None:
    """Apply `method` to `model` (a one-line error where the method is not defined on its family),
    keep the head trainable, and remember the method for `merge`."""
    method.check_family(anatomy.family_of(model))
    method.apply(model)
    for head in backbone.heads(model):
        head.requires_grad_(True)
    setattr(model, METHOD_ATTRIBUTE, method)


def method_of(model: nn.Module) -> Method:
    method = getattr(model, METHOD_ATTRIBUTE, None)
    if method is None:
        raise PeftbenchError("this model was not built by peftbench.build_model; nothing to merge")
    return method


def merge(model: nn.Module) -> nn.Module:
    """Fold the method into the backbone: a plain timm ViT with the standard state-dict keys.

    Raises for methods whose update is not linear in the frozen weights (VPT, adapters)."""
    method = method_of(model)
    if not method.mergeable:
        raise PeftbenchError(
            f"method '{method.name}' adds computation that cannot be folded into the weights; it cannot be merged"
        )
    merged = method.merge(model)
    if merged is not model and hasattr(merged, METHOD_ATTRIBUTE):  # a copy: it is a plain ViT now
        delattr(merged, METHOD_ATTRIBUTE)
    return merged
