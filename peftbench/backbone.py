"""Backbones: timm Vision Transformers by name, their weights, and the task head.

Also registers `vit_micro_patch4_32` with timm: a 0.8 M-parameter ViT (32 px, patch 4, width 128,
depth 4, 4 heads) for tests, CI and the demo suite, whose default weights ship with peftbench.
"""
from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

import timm
import torch
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn
from torch import nn

from .errors import PeftbenchError

WEIGHTS_DIR = Path(__file__).parent / "weights"
DEMO_WEIGHTS = WEIGHTS_DIR / "vit_micro_patch4_32.demo.safetensors"
RANDOM_INIT = "random init"

default_cfgs = generate_default_cfgs(
    {
        "vit_micro_patch4_32.demo": {
            "file": str(DEMO_WEIGHTS),
            "num_classes": 0,
            "input_size": (3, 32, 32),
            "interpolation": "bicubic",
            "mean": (0.5, 0.5, 0.5),
            "std": (0.5, 0.5, 0.5),
            "first_conv": "patch_embed.proj",
            "classifier": "head",
            "license": "apache-2.0",
        }
    }
)


@register_model
def vit_micro_patch4_32(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """ViT-Micro/4 at 32 px: the tiny backbone of peftbench's tests and demo suite."""
    args = dict(img_size=32, patch_size=4, embed_dim=128, depth=4, num_heads=4, mlp_ratio=4.0)
    return build_model_with_cfg(
        VisionTransformer,
        "vit_micro_patch4_32",
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        **{**args, **kwargs},
    )


@cache
def _file_sha256(path: Path, mtime_ns: int, size: int) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    """The sha256 of a file, computed once per process for an unchanged file."""
    stat = path.stat()
    return _file_sha256(path.resolve(), stat.st_mtime_ns, stat.st_size)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    for wrapper in ("state_dict", "model", "module"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_weights(model: VisionTransformer, path: Path) -> None:
    """Load a checkpoint into `model`, all but the head: Google's Flax `.npz`, safetensors or a
    torch state dict (`.pth`/`.pt`/`.bin`). Any other missing or unexpected key is an error."""
    if not path.is_file():
        raise PeftbenchError(f"weights file not found: {path}")
    head_keys = {f"head.{k}" for k, _ in model.head.named_parameters()}
    try:
        if path.suffix == ".npz":
            model.load_pretrained(str(path))  # timm's reader for the original ViT release
            return
        state = checkpoint_filter_fn(_read_state_dict(path), model)
    except Exception as exc:  # corrupt file, wrong format
        raise PeftbenchError(f"cannot read weights {path}: {exc}") from None
    state = {k: v for k, v in state.items() if not k.startswith("head.")}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatch: another architecture
        raise PeftbenchError(f"weights {path} do not fit the model: {str(exc).splitlines()[-1].strip()}") from None
    missing = [k for k in missing if k not in head_keys]
    if missing or unexpected:
        raise PeftbenchError(
            f"weights {path} do not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )


def reset_head(model: VisionTransformer, num_classes: int) -> None:
    """Replace the classifier with a zero-initialised one for `num_classes` classes."""
    model.reset_classifier(num_classes)
    nn.init.zeros_(model.head.weight)
    nn.init.zeros_(model.head.bias)


def create_backbone(model_name: str, num_classes: int, weights: str | Path | None) -> tuple[VisionTransformer, str]:
    """Build `model_name` with a zero-initialised head for `num_classes` classes.

    `weights`: "default" for the model's pretrained weights (the shipped file for
    `vit_micro_patch4_32`, timm's local cache for the others), a checkpoint path, or None for
    random initialisation. Returns the model and the weights' identity (sha256, or "random init").
    """
    _architecture(model_name)
    model = timm.create_model(model_name, pretrained=False, num_classes=num_classes)
    identity = RANDOM_INIT
    if weights == "default":
        shipped = default_weights_file(model_name)
        if shipped:
            weights = shipped
        else:
            model, identity = _from_timm_cache(model_name, num_classes)
    if isinstance(weights, (str, Path)) and weights != "default":
        path = Path(weights).expanduser()
        load_weights(model, path)
        identity = file_sha256(path)
    reset_head(model, num_classes)
    return model, identity


def _from_timm_cache(model_name: str, num_classes: int) -> tuple[VisionTransformer, str]:
    try:
        model = timm.create_model(model_name, pretrained=True, num_classes=num_classes)
    except Exception as exc:
        raise PeftbenchError(
            f"no pretrained weights for '{model_name}' could be loaded offline ({type(exc).__name__}); "
            "pass --weights PATH (.npz, .safetensors or .pth) or --no-pretrained"
        ) from None
    cfg = model.pretrained_cfg
    return model, f"timm:{cfg.get('hf_hub_id') or cfg.get('architecture')}.{cfg.get('tag', '')}"


def _check_model_name(model_name: str) -> None:
    if not timm.is_model(model_name):
        raise PeftbenchError(
            f"unknown model '{model_name}'; valid names: timm ViTs such as vit_base_patch16_224, vit_micro_patch4_32"
        )


def _architecture(model_name: str) -> VisionTransformer:
    """The model built on the meta device: its shape without memory or initialisation cost."""
    _check_model_name(model_name)
    with torch.device("meta"):
        model = timm.create_model(model_name, pretrained=False)
    if not isinstance(model, VisionTransformer):
        raise PeftbenchError(f"model '{model_name}' is a {type(model).__name__}; peftbench adapts timm VisionTransformer models")
    return model


def model_input_size(model_name: str) -> int:
    """The square input resolution of `model_name`."""
    return int(_architecture(model_name).patch_embed.img_size[0])


def default_weights_file(model_name: str) -> Path | None:
    """The weights file shipped with peftbench for `model_name`, if any."""
    shipped = _architecture(model_name).pretrained_cfg.get("file")
    return Path(shipped) if shipped else None


def normalisation(model: VisionTransformer) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The mean and std the backbone was pre-trained with."""
    cfg = model.pretrained_cfg
    return tuple(cfg.get("mean", (0.5, 0.5, 0.5))), tuple(cfg.get("std", (0.5, 0.5, 0.5)))


def head_parameter_names(model: VisionTransformer) -> set[str]:
    """Names of the classifier's parameters."""
    return {f"head.{name}" for name, _ in model.head.named_parameters()}
