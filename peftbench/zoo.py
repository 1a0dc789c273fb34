"""Tiny backbones of every family, registered with timm for tests, CI and the demo suite (32 px).

`vit_micro_patch4_32` (0.8 M parameters) ships trained weights (the demo's default); the others
start from random initialisation (`--no-pretrained`) and exist so that every method runs, and is
tested, on every family peftbench adapts on a CPU in seconds:

| name | family | shape |
|---|---|---|
| vit_micro_patch4_32 | vit | width 128, depth 4, 4 heads, patch 4 |
| deit_micro_distilled_patch4_32 | vit (DeiT distilled: class and distillation tokens, two heads) | width 64, depth 2 |
| swin_micro_patch2_window4_32 | swin | widths 32, 64; depths 2, 2; window 4, patch 2 |
| convnext_micro_32 | convnext | widths 16, 32, 64, 128; depths 1, 1, 2, 1 |
| eva02_micro_patch4_32 | eva (EVA-02: separate q/k/v, SwiGLU with its norm, RoPE) | width 64, depth 2 |
| dinov3_micro_patch4_32 | eva (DINOv3: fused qkv without bias, 4 register tokens, layer scale, RoPE) | width 64, depth 2 |
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from timm.models import (
    build_model_with_cfg,
    convnext,
    deit,
    eva,
    generate_default_cfgs,
    register_model,
    swin_transformer,
)
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn
from torch import nn

WEIGHTS_DIR = Path(__file__).parent / "weights"
DEMO_WEIGHTS = WEIGHTS_DIR / "vit_micro_patch4_32.demo.safetensors"
TINY = {"input_size": (3, 32, 32), "interpolation": "bicubic", "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
TINY_TOKENS = dict(img_size=32, patch_size=4, embed_dim=64, depth=2, num_heads=2)  # the tiny DeiT and Evas
TINY_NAMES = (
    "vit_micro_patch4_32",
    "deit_micro_distilled_patch4_32",
    "swin_micro_patch2_window4_32",
    "convnext_micro_32",
    "eva02_micro_patch4_32",
    "dinov3_micro_patch4_32",
)

default_cfgs = generate_default_cfgs(
    {
        "vit_micro_patch4_32.demo": {
            **TINY,
            "file": str(DEMO_WEIGHTS),
            "num_classes": 0,
            "first_conv": "patch_embed.proj",
            "classifier": "head",
            "license": "apache-2.0",
        },
        "deit_micro_distilled_patch4_32": {**TINY, "classifier": ("head", "head_dist")},
        "swin_micro_patch2_window4_32": {**TINY, "classifier": "head.fc"},
        "convnext_micro_32": {**TINY, "classifier": "head.fc"},
        "eva02_micro_patch4_32": {**TINY, "classifier": "head"},
        "dinov3_micro_patch4_32": {**TINY, "classifier": "head"},
    }
)


def _build(cls: type[nn.Module], name: str, pretrained: bool, args: dict, kwargs: dict, **extra) -> nn.Module:
    return build_model_with_cfg(cls, name, pretrained, **extra, **{**args, **kwargs})


@register_model
def vit_micro_patch4_32(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """ViT-Micro/4 at 32 px: the tiny backbone of peftbench's tests and demo suite."""
    args = dict(img_size=32, patch_size=4, embed_dim=128, depth=4, num_heads=4, mlp_ratio=4.0)
    return _build(
        VisionTransformer, "vit_micro_patch4_32", pretrained, args, kwargs, pretrained_filter_fn=checkpoint_filter_fn
    )


@register_model
def deit_micro_distilled_patch4_32(pretrained: bool = False, **kwargs) -> deit.VisionTransformerDistilled:
    """DeiT distilled at 32 px: class and distillation tokens, `head` and `head_dist`."""
    return _build(deit.VisionTransformerDistilled, "deit_micro_distilled_patch4_32", pretrained, TINY_TOKENS, kwargs)


@register_model
def swin_micro_patch2_window4_32(pretrained: bool = False, **kwargs) -> swin_transformer.SwinTransformer:
    """Swin at 32 px: a 16x16 patch grid, 4x4 windows (shifted in every second block), one PatchMerging."""
    args = dict(
        img_size=32, patch_size=2, window_size=4, embed_dim=32, depths=(2, 2), num_heads=(2, 4), drop_path_rate=0.0
    )
    return _build(swin_transformer.SwinTransformer, "swin_micro_patch2_window4_32", pretrained, args, kwargs)


@register_model
def convnext_micro_32(pretrained: bool = False, **kwargs) -> convnext.ConvNeXt:
    """ConvNeXt at 32 px: a 4x4 patch stem, four stages down to 1x1, layer scale, channels-last MLPs."""
    args = dict(depths=(1, 1, 2, 1), dims=(16, 32, 64, 128))
    return _build(convnext.ConvNeXt, "convnext_micro_32", pretrained, args, kwargs)


@register_model
def eva02_micro_patch4_32(pretrained: bool = False, **kwargs) -> eva.Eva:
    """EVA-02's anatomy at 32 px: separate q/k/v projections (k without bias), SwiGLU MLP with its
    inner LayerNorm, rotary position embedding, absolute position embedding, class token."""
    args = dict(
        **TINY_TOKENS,
        qkv_fused=False,
        mlp_ratio=4 * 2 / 3,
        swiglu_mlp=True,
        scale_mlp=True,
        use_rot_pos_emb=True,
        ref_feat_shape=(8, 8),
    )
    return _build(eva.Eva, "eva02_micro_patch4_32", pretrained, args, kwargs)


@register_model
def dinov3_micro_patch4_32(pretrained: bool = False, **kwargs) -> eva.Eva:
    """DINOv3's anatomy at 32 px: fused qkv without bias, 4 register tokens, layer scale, DINOv3 RoPE,
    no absolute position embedding, average pooling (timm's default for DINOv3)."""
    args = dict(
        **TINY_TOKENS,
        qkv_bias=False,
        init_values=1e-5,
        rope_type="dinov3",
        rope_temperature=100,
        rope_rotate_half=True,
        use_rot_pos_emb=True,
        use_abs_pos_emb=False,
        num_reg_tokens=4,
        use_fc_norm=False,
        norm_layer=partial(nn.LayerNorm, eps=1e-5),
    )
    return _build(eva.Eva, "dinov3_micro_patch4_32", pretrained, args, kwargs)
