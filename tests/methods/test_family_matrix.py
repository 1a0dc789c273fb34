"""The method matrix over a tiny model of every backbone family (peftbench/zoo.py) and the ViT
variants whose specifics methods must respect: register tokens, no class token with MAP pooling,
CLIP's `norm_pre`, average pooling with `fc_norm`.

Every method either runs (gradients reach exactly its trainable parameters, a mergeable one
merges to the same features, a plain model again) or is refused with a one-line error naming the family.
"""

from __future__ import annotations

import pytest
import timm
import torch
from test_methods_matrix import assert_gradients_reach_exactly_the_trainable, perturb_trainable

import peftbench
from peftbench import anatomy, backbone
from peftbench.api import adapt, method_of
from peftbench.errors import PeftbenchError
from peftbench.methods import _registry as registry
from peftbench.methods import get_method

CLASSES = 3
FAMILY_MODELS = {
    "deit_micro_distilled_patch4_32": "vit",
    "swin_micro_patch2_window4_32": "swin",
    "convnext_micro_32": "convnext",
    "eva02_micro_patch4_32": "eva",
    "dinov3_micro_patch4_32": "eva",
}
VIT_VARIANTS = {  # timm keywords of vit_micro_patch4_32, as the released models set them
    "reg4": {"reg_tokens": 4},  # DINOv2 with registers
    "map-no-cls": {"class_token": False, "global_pool": "map"},  # SigLIP
    "norm-pre": {"pre_norm": True},  # CLIP
    "avg-fc-norm": {"global_pool": "avg", "fc_norm": True},  # MAE fine-tuning
}
METHODS = sorted(name for name, cls in registry.all_methods().items() if cls.available())
# the families a method must run on, from its paper's and released code's definitions (the list)
MUST_RUN = {
    "full": anatomy.ALL_FAMILIES,
    "linear": anatomy.ALL_FAMILIES,
    "bitfit": anatomy.ALL_FAMILIES,
    "ssf": anatomy.ALL_FAMILIES,
    "lora": ("vit", "swin", "eva"),
    "rlrr": ("vit", "swin"),
    "adapter": ("vit", "swin", "eva"),
    "adaptformer": ("vit", "swin", "eva"),
}


def build_on(model: torch.nn.Module, name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    adapt(model, get_method(name)())
    return model.eval()


def tiny(model_name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return backbone.create_backbone(model_name, CLASSES, None)[0]


def variant(kwargs: dict) -> torch.nn.Module:
    torch.manual_seed(0)
    model = timm.create_model("vit_micro_patch4_32", num_classes=CLASSES, **kwargs)
    backbone.reset_head(model, CLASSES)
    return model


def features(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.forward_head(model.forward_features(images), pre_logits=True)


def check_runs(model: torch.nn.Module, name: str, images: torch.Tensor) -> None:
    """Gradients reach exactly the trainable parameters; merged == unmerged for mergeable methods."""
    assert_gradients_reach_exactly_the_trainable(model, images)
    model.zero_grad(set_to_none=True)
    if method_of(model).mergeable:  # in fp64, where RandLoRA's scale of 20 amplifies no rounding
        model, images = model.double(), images.double()
        before = features(model, images)
        merged = peftbench.merge(model).eval()
        torch.testing.assert_close(features(merged, images), before, atol=1e-9, rtol=0)
        assert not any(n.endswith(("lora_A", "s_in")) for n, _ in merged.named_parameters())


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("model_name", sorted(FAMILY_MODELS))
@pytest.mark.parametrize("name", METHODS)
def test_every_method_runs_on_every_family_or_is_refused_naming_it(model_name: str, name: str, images):
    family = FAMILY_MODELS[model_name]
    model = tiny(model_name)
    assert anatomy.family_of(model) == family
    cls = get_method(name)
    if family not in cls.families:
        assert name not in MUST_RUN or family not in MUST_RUN[name]
        with pytest.raises(PeftbenchError, match=f"not on {family}") as refused:
            build_on(model, name)
        assert "\n" not in str(refused.value)
        return
    try:
        model = build_on(model, name)
    except PeftbenchError as exc:
        # peft's default targets (the fused qkv) may be absent, or a tuner's default size exceed a tiny
        # layer; Convpass needs one class token (DeiT has two): one line, naming why
        assert "\n" not in str(exc)
        assert name.startswith("peft-") or (name == "convpass" and "one class token" in str(exc)), exc
        return
    check_runs(model, name, images)


@pytest.mark.parametrize("kind", sorted(VIT_VARIANTS))
@pytest.mark.parametrize("name", METHODS)
def test_every_vit_method_runs_on_the_vit_variants(kind: str, name: str, images):
    model = variant(VIT_VARIANTS[kind])
    try:
        build_on(model, name)
    except PeftbenchError as exc:  # Convpass's bypass reads one class token before the patch grid
        assert name == "convpass" and kind in ("reg4", "map-no-cls"), exc
        return
    tokens = model.forward_features(images)
    assert tokens.shape[1] == model.num_prefix_tokens + 64  # prompts are gone, prefix tokens kept
    check_runs(model, name, images)


@pytest.mark.parametrize("name", sorted(MUST_RUN))
def test_the_methods_papers_define_on_a_family_are_offered_there(name: str):
    assert set(MUST_RUN[name]) <= set(get_method(name).families)


def test_ssf_on_convnext_trains_head_norm_and_keeps_the_pooled_pair_when_merged(images):
    model = build_on(tiny("convnext_micro_32"), "ssf")
    assert all(p.requires_grad for p in model.head.norm.parameters())
    perturb_trainable(model)
    merged = peftbench.merge(model).eval()
    assert {n for n, _ in merged.named_parameters() if "ssf" in n or n.startswith("norm_pre")} == {
        "norm_pre.scale",
        "norm_pre.shift",
    }
    torch.testing.assert_close(features(merged, images), features(model, images), atol=2e-5, rtol=0)


def test_deit_distilled_replaces_both_heads_and_averages_them(images):
    model = tiny("deit_micro_distilled_patch4_32").eval()
    assert backbone.head_parameter_names(model) == {"head.weight", "head.bias", "head_dist.weight", "head_dist.bias"}
    assert all(h.weight.abs().sum() == 0 and h.out_features == CLASSES for h in backbone.heads(model))
    with torch.no_grad():
        for head in backbone.heads(model):
            head.weight.normal_()
        tokens = model.forward_features(images)
        expected = (model.head(tokens[:, 0]) + model.head_dist(tokens[:, 1])) / 2
        torch.testing.assert_close(model(images), expected)


def test_lora_on_separate_projections_adapts_q_and_v_only():
    model = build_on(tiny("eva02_micro_patch4_32"), "lora")
    adapted = {n.rsplit(".", 1)[0] for n, p in model.named_parameters() if p.requires_grad and "lora_A" in n}
    assert adapted == {f"blocks.{i}.attn.{p}_proj" for i in range(2) for p in "qv"}
