"""Backbones: timm models of the families peftbench adapts (anatomy.py) by name, their weights, and the task head.

Importing it registers the tiny models of every family with timm (zoo.py).
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import timm
import torch
from huggingface_hub import constants as hf_constants
from huggingface_hub import try_to_load_from_cache
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn
from torch import nn

from . import anatomy
from .errors import PeftbenchError
from .zoo import DEMO_WEIGHTS, TINY_NAMES, WEIGHTS_DIR  # noqa: F401  (registers the tiny models; re-exported)

RANDOM_INIT = "random init"
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".tar")  # .tar: MoCo v3's .pth.tar
ACCEPTED_FORMATS = ".npz (Google's Flax ViT release), .safetensors, .pth/.pt/.bin/.pth.tar (torch state dict)"
# Google's original ImageNet-21k release behind timm's `orig_in21k` tags (VPT, NOAH and RLRR use ViT-B_16.npz).
ORIGINAL_RELEASE = "https://storage.googleapis.com/vit_models/imagenet21k/"
ORIGINAL_NPZ = {
    "vit_base_patch16_224.orig_in21k": "ViT-B_16.npz",
    "vit_base_patch32_224.orig_in21k": "ViT-B_32.npz",
    "vit_large_patch16_224.orig_in21k": "ViT-L_16.npz",
    "vit_large_patch32_224.orig_in21k": "ViT-L_32.npz",
    "vit_huge_patch14_224.orig_in21k": "ViT-H_14.npz",
}


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


@dataclass(frozen=True)
class _Shape:
    """What a checkpoint must share with the model; timm would silently resample another patch size."""

    depth: int
    patch: tuple[int, ...]
    width: int

    def __str__(self) -> str:
        return f"depth {self.depth}, patch {'x'.join(map(str, self.patch))}, width {self.width}"


def _model_shape(model: nn.Module) -> _Shape | None:
    """The shape of a plain-token backbone (vit, eva); None for the hierarchical ones, whose
    mismatches `load_state_dict` reports key by key."""
    if anatomy.family_of(model) not in anatomy.TOKEN_FAMILIES:
        return None
    return _Shape(len(model.blocks), tuple(model.patch_embed.patch_size), model.embed_dim)


def _check_shape(found: _Shape, model: nn.Module, path: Path) -> None:
    expected = _model_shape(model)
    if expected is not None and found != expected:
        name = model.pretrained_cfg.get("architecture", type(model).__name__)
        raise PeftbenchError(
            f"weights {path} do not fit the model {name} ({expected}): the file holds a ViT of {found}"
        )


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    for wrapper in ("state_dict", "model", "module"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    return released_encoder(state)


# Self-supervised releases: what is not the encoder (MoCo v3's momentum encoder and predictor, its
# projection MLP under `head.`; MAE's decoder and mask token) is dropped.
SSL_NOT_ENCODER = ("momentum_encoder.", "predictor.", "decoder", "mask_token")


def released_encoder(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The encoder of a released checkpoint under timm's keys: the DDP prefix `module.` dropped;
    for MoCo v3 (`vit-b-300ep.pth.tar`: `module.base_encoder.*`) the base encoder without its
    projection head; for MAE (`mae_pretrain_vit_base.pth`) the encoder without decoder and mask token."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if any(k.startswith("base_encoder.") for k in state):
        state = {k.removeprefix("base_encoder."): v for k, v in state.items() if k.startswith("base_encoder.")}
        state = {k: v for k, v in state.items() if not k.startswith("head.")}  # the projection MLP
    return {k: v for k, v in state.items() if not k.startswith(SSL_NOT_ENCODER)}


def _state_dict_shape(state: dict[str, torch.Tensor]) -> _Shape | None:
    """The shape of a timm-layout state dict; None for other layouts (CLIP, DINOv2), which
    timm's `checkpoint_filter_fn` converts and `load_state_dict` checks."""
    kernel = state.get("patch_embed.proj.weight")
    if kernel is None or kernel.ndim != 4:
        return None
    depth = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    return _Shape(depth, tuple(kernel.shape[2:]), kernel.shape[0])


def _unreadable(path: Path, exc: BaseException) -> PeftbenchError:
    """Why a weights file cannot be read, in terms of the format its suffix promises."""
    if path.suffix.lower() == ".npz":
        what = "not an .npz archive of arrays (Google's Flax ViT checkpoints are)"
    elif path.suffix.lower() == ".safetensors":
        what = "not a valid safetensors file (truncated or another format)"
    else:
        what = "not a torch state dict that torch.load(weights_only=True) can read"
    detail = _first_line(exc)
    if "allow_pickle" in detail:  # numpy's words for "not a zip": its advice to unpickle is not ours
        detail = "the file is no zip archive of .npy arrays"
    return PeftbenchError(f"cannot read weights {path}: {what} ({type(exc).__name__}: {detail})")


def _file_shape(path: Path) -> _Shape | None:
    """The ViT a checkpoint holds (None for layouts timm converts), or a one-line error if unreadable."""
    try:
        return _npz_shape(path) if path.suffix.lower() == ".npz" else _state_dict_shape(_read_state_dict(path))
    except Exception as exc:  # not a zip, pickled objects, truncated, text
        raise _unreadable(path, exc) from None


def check_weights(model_name: str, weights: str | Path | None) -> None:
    """Up front, once per sweep: the weights file exists, can be read and holds this architecture."""
    path, _ = resolve_weights(model_name, weights)
    if path is None:
        return
    if path.suffix.lower() not in (".npz", ".safetensors", *TORCH_SUFFIXES):
        raise PeftbenchError(
            f"weights {path}: unknown format '{path.suffix or path.name}'; accepted: {ACCEPTED_FORMATS}"
        )
    found = _file_shape(path)
    if found:
        _check_shape(found, _architecture(model_name), path)


def _checkpoint_filter(model: nn.Module):
    """timm's converter for the model's own module (ViT, DeiT, Swin, ConvNeXt, Eva)."""
    return getattr(sys.modules[type(model).__module__], "checkpoint_filter_fn", checkpoint_filter_fn)


def _load_state_dict(model: nn.Module, path: Path) -> None:
    """A safetensors or torch checkpoint, all but the head; any other missing or unexpected key is an error."""
    try:
        raw = _read_state_dict(path)
    except Exception as exc:  # corrupt file, objects other than tensors
        raise _unreadable(path, exc) from None
    found = _state_dict_shape(raw)
    if found:
        _check_shape(found, model, path)
    try:
        state = _checkpoint_filter(model)(raw, model)
    except Exception as exc:  # a layout timm does not know
        raise PeftbenchError(f"cannot read weights {path}: {_first_line(exc)}") from None
    head = head_parameter_names(model)
    classifiers = tuple(f"{path}." for path in anatomy.head_paths(model))  # not ConvNeXt's pretrained head.norm
    state = {k: v for k, v in state.items() if not k.startswith(classifiers)}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatch: another architecture
        raise PeftbenchError(f"weights {path} do not fit the model: {str(exc).splitlines()[-1].strip()}") from None
    missing = [k for k in missing if k not in head]
    if missing or unexpected:
        raise PeftbenchError(f"weights {path} do not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")


def _npz_shape(path: Path) -> _Shape:
    """The shape of a ViT in Google's Flax layout, any key prefix (`opt/target/`, `params/`)."""
    archive = np.load(path, allow_pickle=False)
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError("not an .npz archive")
    with archive:
        kernels = [k for k in archive.files if k.endswith("embedding/kernel")]
        if not kernels:
            raise ValueError("no 'embedding/kernel': not a ViT in Google's Flax layout")
        prefix = min(kernels, key=len).removesuffix("embedding/kernel")
        patch_h, patch_w, _, width = archive[f"{prefix}embedding/kernel"].shape
        stacked = f"{prefix}Transformer/encoderblock/LayerNorm_0/scale"  # big_vision: blocks stacked on axis 0
        if stacked in archive.files:
            depth = archive[stacked].shape[0]
        else:
            block = re.compile(re.escape(prefix) + r"Transformer/encoderblock_(\d+)/")
            depth = len({m.group(1) for k in archive.files if (m := block.match(k))})
    return _Shape(depth, (patch_h, patch_w), width)


def _load_npz(model: nn.Module, path: Path) -> None:
    """Google's Flax `.npz` through timm's reader, all but the head. The representation layer of
    the in21k release (`pre_logits`) is dropped, as VPT and NOAH do: our ViTs have none."""
    if not isinstance(model, VisionTransformer):
        raise PeftbenchError(f"weights {path}: an .npz holds a Flax ViT; this model is a {type(model).__name__}")
    _check_shape(_file_shape(path), model, path)
    head = {k: v.clone() for k, v in model.head.state_dict().items()}
    try:
        model.load_pretrained(str(path))  # also copies the npz head where its shape matches
    except KeyError as exc:
        raise PeftbenchError(f"weights {path} do not fit the model: the file lacks {exc}") from None
    except (RuntimeError, ValueError) as exc:
        raise PeftbenchError(f"weights {path} do not fit the model: {_first_line(exc)}") from None
    model.head.load_state_dict(head)


def load_weights(model: nn.Module, path: Path) -> None:
    """Load a checkpoint into `model`, all but the head: Google's Flax `.npz`, safetensors or a
    torch state dict (`.pth`/`.pt`/`.bin`). A file of another depth, patch size or width is an error."""
    if not path.is_file():
        raise PeftbenchError(f"weights file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        _load_npz(model, path)
    elif suffix in (".safetensors", *TORCH_SUFFIXES):
        _load_state_dict(model, path)
    else:
        kind = path.suffix or path.name
        raise PeftbenchError(f"weights {path}: unknown format '{kind}'; accepted: {ACCEPTED_FORMATS}")


def heads(model: nn.Module) -> list[nn.Linear]:
    """The classifier's Linear layers (anatomy.head_paths): `head`, `head.fc`, plus `head_dist` for
    DeiT distilled models, whose evaluation averages the two heads' logits as DeiT does (timm's
    forward_head outside distilled training); both heads are replaced and train."""
    return [model.get_submodule(path) for path in anatomy.head_paths(model)]


def reset_head(model: nn.Module, num_classes: int) -> None:
    """Replace the classifier with a zero-initialised one for `num_classes` classes."""
    model.reset_classifier(num_classes)
    init_head(model, "zero")


def init_head(model: nn.Module, how: str) -> None:
    """`zero` (RLRR's zero_head), `trunc_normal` (weight trunc_normal(std 0.02, cut at ±2), bias 0:
    timm's ViT init of a new Linear, SSF's head, NOAH's `reset_classifier`) or `linear` (nn.Linear's own
    init: timm 0.4's `reset_classifier`, FacT's head)."""
    for head in heads(model):
        if how == "linear":
            head.reset_parameters()
            continue
        if how == "trunc_normal":
            nn.init.trunc_normal_(head.weight, std=0.02, a=-2.0, b=2.0)
        else:
            nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)


def create_backbone(
    model_name: str, num_classes: int, weights: str | Path | None, image_size: int | None = None
) -> tuple[nn.Module, str]:
    """Build `model_name` with a zero-initialised head for `num_classes` classes, for `image_size`
    px inputs (None: the model's own; see `build_kwargs`).

    `weights`: "default" for the model's pretrained weights (the shipped file for
    `vit_micro_patch4_32`, the Hugging Face cache for the others; never a download), a checkpoint
    path, or None for random initialisation. Returns the model and the weights' identity (sha256,
    "timm:<model>" for cached hub weights, or "random init").
    """
    kwargs = build_kwargs(model_name, image_size)
    path, identity = resolve_weights(model_name, weights)  # before building: a missing file fails fast
    model = timm.create_model(model_name, pretrained=False, num_classes=num_classes, **kwargs)
    if path is not None:
        load_weights(model, path)
    reset_head(model, num_classes)
    return model, identity


def resolve_weights(model_name: str, weights: str | Path | None) -> tuple[Path | None, str]:
    """The file to load (None for random init) and the weights' identity (sha256, "timm:<model>"
    or "random init"), found without building the model or touching the network."""
    if weights is None:
        return None, RANDOM_INIT
    if weights == "default":
        return _default_weights(model_name)
    path = Path(weights).expanduser()
    if not path.is_file():
        raise PeftbenchError(f"weights file not found: {path}")
    return path, file_sha256(path)


def _default_weights(model_name: str) -> tuple[Path, str]:
    """The file of the model's default weights and their identity, without touching the network."""
    cfg = _architecture(model_name).pretrained_cfg
    if cfg.get("file"):
        shipped = Path(cfg["file"])
        if not shipped.is_file():
            raise PeftbenchError(
                f"the weights shipped for '{model_name}' are missing ({shipped}); "
                "reinstall peftbench, or pass --weights PATH or --no-pretrained"
            )
        return shipped, file_sha256(shipped)
    cache_dir = _hf_cache_dir()
    for filename in _hub_filenames(cfg):
        cached = try_to_load_from_cache(cfg["hf_hub_id"], filename, cache_dir=cache_dir)
        if isinstance(cached, str):  # otherwise None or a "known to be missing" marker
            return Path(cached), f"timm:{model_name}"
    raise _no_cached_weights(model_name, cfg, cache_dir)


def _hf_cache_dir() -> str:
    """The Hugging Face hub cache as the environment names it now (`HF_HUB_CACHE`, `HF_HOME`)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return hf_constants.HF_HUB_CACHE


def _hub_filenames(cfg: dict) -> tuple[str, ...]:
    """The hub files timm would load, safetensors first; none without a hub repo."""
    if not cfg.get("hf_hub_id"):
        return ()
    filename = cfg.get("hf_hub_filename") or "pytorch_model.bin"
    # timm's safe alternatives: [open_clip_]pytorch_model.bin -> [open_clip_]model.safetensors
    return tuple(dict.fromkeys((filename.replace("pytorch_model.bin", "model.safetensors"), filename)))


def _original_file(cfg: dict) -> str | None:
    """Where the original (non-hub) file of the model's weights lies, if timm or we know it."""
    release = f"{cfg.get('architecture')}.{cfg.get('tag')}"
    if release in ORIGINAL_NPZ:
        return ORIGINAL_RELEASE + ORIGINAL_NPZ[release]
    return cfg.get("url") or None


def _no_cached_weights(model_name: str, cfg: dict, cache_dir: str) -> PeftbenchError:
    """One line naming the file to fetch and the flag to pass."""
    hub_id, hub_files = cfg.get("hf_hub_id"), _hub_filenames(cfg)
    sources = [f"{hub_files[0]} of the hub repo {hub_id}"] if hub_files else []
    sources += [original] if (original := _original_file(cfg)) else []
    if not sources:
        return PeftbenchError(
            f"timm knows no pretrained weights for '{model_name}': "
            "pass --weights PATH, or --no-pretrained for random init"
        )
    fill = f"; or fill that cache on a connected machine: hf download {hub_id} {hub_files[0]}" if hub_files else ""
    return PeftbenchError(
        f"no pretrained weights for '{model_name}' in the Hugging Face cache {cache_dir} (peftbench never downloads): "
        f"fetch {' or '.join(sources)} and pass --weights PATH, or pass --no-pretrained for random init{fill}"
    )


def _check_model_name(model_name: str) -> None:
    if not timm.is_model(model_name):
        raise PeftbenchError(
            f"unknown model '{model_name}'; valid names: timm models of the families "
            f"{', '.join(anatomy.ALL_FAMILIES)}, such as vit_base_patch16_224, swin_base_patch4_window7_224, "
            f"convnext_base, eva02_base_patch14_224, or the tiny {', '.join(TINY_NAMES)}"
        )


@cache
def _architecture_of(model_name: str, image_size: int | None = None) -> nn.Module:
    _check_model_name(model_name)
    with torch.device("meta"):
        model = timm.create_model(model_name, pretrained=False, **_size_kwargs(model_name, image_size))
    family = anatomy.family_of(model, model_name)
    if family == "swin":
        _check_swin_windows(model, model_name)
    return model


def _architecture(model_name: str, image_size: int | None = None) -> nn.Module:
    """The model built on the meta device: its shape without memory or initialisation cost."""
    return _architecture_of(model_name, image_size)


def _size_kwargs(model_name: str, image_size: int | None) -> dict:
    if image_size is None:
        return {}
    native = _architecture_of(model_name)
    if anatomy.input_size(native) <= image_size or anatomy.family_of(native) == "convnext":
        return {}  # never enlarged: the tiny test backbones keep their own size
    return {"img_size": image_size}


def build_kwargs(model_name: str, image_size: int | None) -> dict:
    """timm keywords that build `model_name` for `image_size` px inputs when it was made for more
    (none for a smaller backbone, which keeps its size, or for ConvNeXt, which takes any): `img_size`, so that timm's checkpoint filter interpolates the position
    embedding (ViT, Eva: DINOv2's 518 -> 224 as timm's `resample_abs_pos_embed` does) or Swin's
    relative-position tables; Swin's windows must tile every stage (checked, one line)."""
    _architecture(model_name, image_size)
    return _size_kwargs(model_name, image_size)


def _check_swin_windows(model: nn.Module, model_name: str) -> None:
    for index, stage in enumerate(model.layers):
        block = stage.blocks[0]
        height, width = block.input_resolution
        window = block.window_size
        if height % window[0] or width % window[1]:
            raise PeftbenchError(
                f"model '{model_name}' at {anatomy.input_size(model)} px: stage {index}'s {height}x{width} tokens do "
                f"not tile into {window[0]}x{window[1]} windows; choose an input size that does"
            )


def family_of_model(model_name: str) -> str:
    """The anatomy family of `model_name` (vit, swin, convnext, eva), or a one-line error."""
    return anatomy.family_of(_architecture(model_name), model_name)


def model_input_size(model_name: str, image_size: int | None = None) -> int:
    """The square input resolution runs of `model_name` use: `image_size` (the suite's), else the model's own."""
    return anatomy.input_size(_architecture(model_name, image_size))


def model_input_size_of(model: nn.Module) -> int:
    """The square input resolution of a built model."""
    return anatomy.input_size(model)


def normalisation(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The mean and std the backbone was pre-trained with."""
    cfg = model.pretrained_cfg
    return tuple(cfg.get("mean", (0.5, 0.5, 0.5))), tuple(cfg.get("std", (0.5, 0.5, 0.5)))


def head_parameter_names(model: nn.Module) -> set[str]:
    """Names of the classifier's parameters."""
    return {f"{path}.{name}" for path in anatomy.head_paths(model)
            for name, _ in model.get_submodule(path).named_parameters()}  # fmt: skip


def set_drop_path(model: nn.Module, rate: float, mode: str = "stochastic") -> None:
    """Regularise each block's two residual branches with a rate rising linearly from 0 in the
    first block to `rate` in the last: timm's stochastic depth (`stochastic`, as NOAH's and SSF's
    `drop_path_rate`) or element-wise dropout (`dropout`, RLRR's `networks.py`)."""
    from timm.layers import DropPath

    blocks = anatomy.blocks(model)
    for index, block in enumerate(blocks):
        p = rate * index / max(1, len(blocks) - 1)
        for name in anatomy.drop_path_slots(block):
            layer = nn.Identity() if p == 0 else DropPath(p) if mode == "stochastic" else nn.Dropout(p)
            setattr(block, name, layer)
