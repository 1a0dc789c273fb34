"""The anatomy of each backbone family: where timm keeps its blocks, attention projections, MLP
linears, norms, patch embedding, prefix tokens and classifier, so that a method asks for "the
attention projections of every block" instead of hard-coding ViT paths.

Families (timm 1.0 class names): `vit` (VisionTransformer and its subclasses: ViT, DeiT with its
distillation head, CLIP, DINOv2, MAE, SigLIP, register-token and MAP-pooled variants), `swin`
(SwinTransformer), `convnext` (ConvNeXt) and `eva` (Eva: EVA-02, DINOv3). Every path is a dotted
module path from the model, as `nn.Module.get_submodule` reads it.
"""

from __future__ import annotations

from dataclasses import dataclass

from timm.models.convnext import ConvNeXt
from timm.models.eva import Eva
from timm.models.swin_transformer import SwinTransformer
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from .errors import PeftbenchError

FAMILY_CLASSES: dict[str, type[nn.Module]] = {
    "vit": VisionTransformer,
    "swin": SwinTransformer,
    "convnext": ConvNeXt,
    "eva": Eva,
}
FAMILY_NAMES = {
    "vit": "timm VisionTransformer (ViT, DeiT, CLIP, DINOv2, MAE, SigLIP)",
    "swin": "timm SwinTransformer",
    "convnext": "timm ConvNeXt",
    "eva": "timm Eva (EVA-02, DINOv3)",
}
ALL_FAMILIES = tuple(FAMILY_CLASSES)
TOKEN_FAMILIES = ("vit", "eva")  # one token sequence through every block (prompts and prefix tokens apply)


def family_of(model: nn.Module, model_name: str = "") -> str:
    """The family of a built model, or a one-line error naming the families peftbench adapts."""
    for name, cls in FAMILY_CLASSES.items():
        if isinstance(model, cls):
            return name
    known = ", ".join(f"{n} ({c.__name__})" for n, c in FAMILY_CLASSES.items())
    what = f"model '{model_name}' is a {type(model).__name__}" if model_name else f"a {type(model).__name__}"
    raise PeftbenchError(f"{what}, not a backbone family peftbench adapts: {known}")


def block_paths(model: nn.Module) -> list[str]:
    """Every block in forward order: `blocks.i` (vit, eva), `layers.s.blocks.i` (swin), `stages.s.blocks.i` (convnext)."""
    family = family_of(model)
    if family in TOKEN_FAMILIES:
        return [f"blocks.{i}" for i in range(len(model.blocks))]
    stages, name = (model.layers, "layers") if family == "swin" else (model.stages, "stages")
    return [f"{name}.{s}.blocks.{i}" for s, stage in enumerate(stages) for i in range(len(stage.blocks))]


def blocks(model: nn.Module) -> list[nn.Module]:
    return [model.get_submodule(path) for path in block_paths(model)]


def block_width(block: nn.Module) -> int:
    """The channels a block reads and writes (its residual stream's width)."""
    norm = block.norm1 if hasattr(block, "norm1") else block.norm
    return int(norm.normalized_shape[0])


@dataclass(frozen=True)
class Attention:
    """One block's attention projections: a fused `qkv` Linear (q, k, v row slices in this order),
    or separate `q`, `k`, `v` Linears (EVA-02); `proj` is the output projection."""

    qkv: str | None
    q: str | None
    k: str | None
    v: str | None
    proj: str

    @property
    def inputs(self) -> tuple[str, ...]:
        """The projections that read the block's normalised input."""
        return (self.qkv,) if self.qkv else (self.q, self.k, self.v)


def attentions(model: nn.Module) -> list[Attention]:
    """The attention projections of every block; ConvNeXt has none (a one-line error says so)."""
    family = family_of(model)
    if family == "convnext":
        raise PeftbenchError("a ConvNeXt has no attention projections (its blocks are depth-wise convolutions)")
    found = []
    for path in block_paths(model):
        attn = model.get_submodule(f"{path}.attn")
        if getattr(attn, "q_bias", None) is not None and not getattr(attn, "qkv_bias_separate", False):
            raise PeftbenchError(
                f"{path}.attn keeps its qkv bias outside the qkv Linear (EVA-01's q_bias/v_bias, applied "
                "with F.linear on qkv.weight): a wrapper of that Linear would be bypassed"
            )
        if isinstance(getattr(attn, "qkv", None), nn.Module):
            found.append(Attention(f"{path}.attn.qkv", None, None, None, f"{path}.attn.proj"))
        else:
            q, k, v = (f"{path}.attn.{p}_proj" for p in "qkv")
            found.append(Attention(None, q, k, v, f"{path}.attn.proj"))
    return found


def mlp_linear_paths(model: nn.Module) -> list[str]:
    """Each block's MLP Linears in forward order: fc1, fc2 (timm's Mlp, ConvNeXt's channels-last Mlp),
    fc1_g, fc1_x, fc2 (SwiGLU, EVA-02), or fc1 (both halves), fc2 (GluMlp)."""
    paths = []
    for path in block_paths(model):
        mlp = model.get_submodule(f"{path}.mlp")
        linears = [name for name, child in mlp.named_children() if isinstance(child, nn.Linear)]
        if not linears:
            kinds = ", ".join(f"{n} {type(c).__name__}" for n, c in mlp.named_children())
            raise PeftbenchError(f"{path}.mlp has no Linear layers ({kinds}): a 1x1-conv MLP is not adapted")
        paths += [f"{path}.mlp.{name}" for name in linears]
    return paths


def block_linear_paths(model: nn.Module) -> list[str]:
    """Every block's Linears in forward order: the attention's inputs, its proj, then the MLP's."""
    mlps = mlp_linear_paths(model)
    if family_of(model) == "convnext":
        return mlps
    per_block: dict[str, list[str]] = {}
    for path in mlps:
        per_block.setdefault(path.rsplit(".mlp.", 1)[0], []).append(path)
    paths = []
    for block, attn in zip(block_paths(model), attentions(model)):
        paths += [*attn.inputs, attn.proj, *per_block[block]]
    return paths


def block_norm_paths(model: nn.Module) -> list[str]:
    """Each block's norms: norm1 and norm2 (vit, swin, eva; plus the SwiGLU's inner `mlp.norm`),
    or `norm` (convnext)."""
    paths = []
    for path in block_paths(model):
        block = model.get_submodule(path)
        names = ["norm"] if family_of(model) == "convnext" else ["norm1", "norm2"]
        if isinstance(getattr(block.mlp, "norm", None), nn.LayerNorm):
            names.append("mlp.norm")
        paths += [f"{path}.{name}" for name in names]
    return paths


def patch_embed_path(model: nn.Module) -> str:
    """The convolution that embeds the image: `patch_embed.proj`, or ConvNeXt's stem conv `stem.0`."""
    return "stem.0" if family_of(model) == "convnext" else "patch_embed.proj"


def final_norm_path(model: nn.Module) -> str | None:
    """The last LayerNorm before the classifier: `norm`, `fc_norm` (after pooling, e.g. MAE's avg
    pool, EVA-02), or ConvNeXt's `head.norm`; None where there is none."""
    paths = ("head.norm",) if family_of(model) == "convnext" else ("norm", "fc_norm")
    for path in paths:
        if isinstance(model.get_submodule(path), nn.LayerNorm):
            return path
    return None


def stage_transition_paths(model: nn.Module) -> list[str]:
    """The layers between the hierarchical stages: Swin's patch-embedding norm and each
    PatchMerging's norm and reduction; ConvNeXt's stem norm and each downsample's norm and conv."""
    family = family_of(model)
    if family == "swin":
        paths = ["patch_embed.norm"] if isinstance(model.patch_embed.norm, nn.LayerNorm) else []
        for s, stage in enumerate(model.layers):
            if not isinstance(stage.downsample, nn.Identity):
                paths += [f"layers.{s}.downsample.norm", f"layers.{s}.downsample.reduction"]
        return paths
    if family == "convnext":
        paths = [f"stem.{i}" for i, m in enumerate(model.stem) if i and not isinstance(m, nn.Identity)]
        for s, stage in enumerate(model.stages):
            if isinstance(stage.downsample, nn.Sequential):
                paths += [f"stages.{s}.downsample.{i}" for i in range(len(stage.downsample))]
        return paths
    return []


def head_paths(model: nn.Module) -> list[str]:
    """The classifier's Linears: `head` (vit, eva), `head` and `head_dist` (DeiT distilled, whose
    evaluation averages the two heads' logits as DeiT's does), `head.fc` (swin, convnext)."""
    found = []
    for path in ("head", "head_dist", "head.fc"):
        try:
            if isinstance(model.get_submodule(path), nn.Linear):
                found.append(path)
        except AttributeError:
            continue
    return found


def drop_path_slots(block: nn.Module) -> tuple[str, ...]:
    """The block's residual-branch regularisers: drop_path1 and drop_path2, or ConvNeXt's one drop_path."""
    return ("drop_path1", "drop_path2") if hasattr(block, "drop_path1") else ("drop_path",)


def input_size(model: nn.Module) -> int:
    """The square input resolution the model is built for."""
    patch_embed = getattr(model, "patch_embed", None)
    if patch_embed is not None and getattr(patch_embed, "img_size", None):
        return int(patch_embed.img_size[0])
    return int(model.pretrained_cfg.get("input_size", (3, 224, 224))[-1])


def describe(model: nn.Module) -> str:
    """A line naming the family and the parts that differ between its members (for records)."""
    family = family_of(model)
    parts = [family, f"{len(block_paths(model))} blocks", f"{input_size(model)} px"]
    if family in TOKEN_FAMILIES:
        parts.append(f"{model.num_prefix_tokens} prefix tokens")
        parts.append(f"pool {model.global_pool or 'none'}")
    return ", ".join(parts)
