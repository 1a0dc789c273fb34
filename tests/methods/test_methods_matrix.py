"""One matrix every registered method passes (the peft test-suite habit), on vit_micro_patch4_32.

The head starts at zero, so outputs are compared as pre-logit features, and every trainable
parameter (head included) is perturbed before the gradient, merge and save/load checks: with a
zero head or a zero LoRA B every upstream gradient would be exactly zero.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file
from timm.models.vision_transformer import VisionTransformer

import peftbench
from peftbench import backbone
from peftbench.api import method_of
from peftbench.data import SplitData
from peftbench.engine import train_and_evaluate, uses_fused_attention
from peftbench.errors import PeftbenchError
from peftbench.methods import _registry as registry
from peftbench.settings import TrainConfig

METHODS = sorted(registry.all_methods())
CLASSES = 5
D, DEPTH, HIDDEN = 128, 4, 512  # vit_micro_patch4_32
HEAD = D * CLASSES + CLASSES
CONVPASS_BYPASS = D * 8 + 8 + 9 * 8 * 8 + 8 + 8 * D + D  # down, 3x3 conv, up
# trainable parameters without the head, from each paper's definition
FORMULAS = {
    "full": 808_064,
    "linear": 0,
    "bitfit": DEPTH * (D + 3 * D + D + D + HIDDEN + D) + D + D,
    "lora": DEPTH * 2 * (8 * D + D * 8),
    "lora_qkv": DEPTH * (D * 8 + 8 * 3 * D),
    "adapter": DEPTH * (D * 8 + 8 + 8 * D + D),
    "adaptformer": DEPTH * (D * 64 + 64 + 64 * D + D),
    "ssf": DEPTH * 2 * (3 * D + D + HIDDEN + D + D + D) + 2 * D + 2 * D,
    "rlrr": DEPTH * (3 * 3 * D + 3 * D + (D + 2 * HIDDEN) + (HIDDEN + 2 * D) + 2 * 2 * D) + 2 * D + 2 * D,
    "vpt_shallow": 10 * D,
    "vpt_deep": DEPTH * 10 * D,
    "fact_tt": 2 * D * 8 + DEPTH * 12 * 8 * 8,  # U, V; per block r² for q, k, v, proj and 4r² for fc1, fc2
    "fact_tk": 2 * D * 8 + 8**3 + 8 * 12 * DEPTH,  # U, V, the core C, the loadings P
    "ln_tune": 2 * D * (2 * DEPTH + 1),  # norm1, norm2 of each block and the final norm
    "convpass": DEPTH * 2 * CONVPASS_BYPASS,  # two per block
    "adapter_houlsby": DEPTH * 2 * (D * 8 + 8 + 8 * D + D),  # after the attention and after the MLP
    "adapter_pfeiffer": DEPTH * (D * 8 + 8 + 8 * D + D),  # after the MLP
    "adapter_plus": DEPTH * (D * 8 + 8 + 8 * D + D + D),  # the bottleneck and the channel scale, after each block
    "repadapter": DEPTH * 2 * (D * 8 + 8 + D * 4 + D),  # A dense, B in 2 groups; before attention and MLP
    "noah": DEPTH * (5 * D + 5 * 4 * D + (D * 5 + 5 + 5 * D + D)),  # 5 prompts, LoRA rank 5 on qkv, adapter 5
    "difffit": DEPTH * (D + 3 * D + D + D + HIDDEN + D) + D + D + D * (2 * DEPTH + 1) + 2 * D * DEPTH,
}
# methods whose initialisation leaves the frozen backbone's function unchanged; lora_qkv only as
# NOAH's code is written (its runs started from timm's re-initialisation of A and B, see lora_qkv.py)
IDENTITY_AT_INIT = {
    "full": {},
    "linear": {},
    "bitfit": {},
    "lora": {},
    "lora_qkv": {"init": "as_written"},
    "adaptformer": {},
    "fact_tt": {},  # V starts at zero
    "fact_tk": {},
    "ln_tune": {},
    "convpass": {},  # up starts at zero
    "difffit": {},  # γ starts at one
    "repadapter": {},  # B starts at zero
}


# merged == unmerged tolerance in fp32 where a method's scale amplifies rounding (fp64 agrees to 1e-13)
MERGE_ATOL = {"peft-randlora": 1e-4}  # RandLoRA: alpha / r = 640 / 32


def build(name: str, seed: int = 0, **options) -> VisionTransformer:
    torch.manual_seed(seed)
    return peftbench.build_model(name, "vit_micro_patch4_32", CLASSES, pretrained=False, **options).eval()


def features(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.forward_head(model.forward_features(images), pre_logits=True)


def perturb_trainable(model: torch.nn.Module, seed: int = 1) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))


def trainable(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", METHODS)
def test_trainable_count_matches_the_formula(name: str):
    if name not in FORMULAS:
        pytest.skip(f"no published formula for plugin method '{name}'")
    model = build(name)
    assert sum(p.numel() for p in trainable(model).values()) == FORMULAS[name] + HEAD
    assert all(p.requires_grad for p in model.head.parameters())


def assert_gradients_reach_exactly_the_trainable(model: torch.nn.Module, images: torch.Tensor) -> None:
    perturb_trainable(model)
    model(images).square().sum().backward()
    for parameter_name, parameter in model.named_parameters():
        if parameter.requires_grad:
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, parameter_name
        else:
            assert parameter.grad is None, parameter_name


@pytest.mark.parametrize("name", METHODS)
def test_gradients_reach_exactly_the_trainable_parameters(name: str, images):
    assert_gradients_reach_exactly_the_trainable(build(name), images)


@pytest.mark.parametrize("name", METHODS)
def test_timm_fused_attention_stays_on(name: str):
    assert uses_fused_attention(build(name))  # F.scaled_dot_product_attention in every block


@pytest.mark.parametrize("name", sorted(set(IDENTITY_AT_INIT) & set(METHODS)))
def test_features_at_init_equal_the_frozen_backbone(name: str, images):
    torch.manual_seed(0)
    plain, _ = backbone.create_backbone("vit_micro_patch4_32", CLASSES, None)
    adapted = build(name, **IDENTITY_AT_INIT[name])
    torch.testing.assert_close(features(adapted, images), features(plain.eval(), images), atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", METHODS)
def test_merged_equals_unmerged_or_merge_is_refused(name: str, images):
    model = build(name)
    perturb_trainable(model)
    if not method_of(model).mergeable:
        with pytest.raises(PeftbenchError, match="cannot be merged"):
            peftbench.merge(model)
        return
    before = features(model, images)
    merged = peftbench.merge(model).eval()
    assert type(merged) is VisionTransformer
    reference_keys = set(timm.create_model("vit_micro_patch4_32", num_classes=CLASSES).state_dict())
    assert set(merged.state_dict()) == reference_keys
    torch.testing.assert_close(features(merged, images), before, atol=MERGE_ATOL.get(name, 1e-5), rtol=0)
    torch.testing.assert_close(features(model, images), before, atol=0, rtol=0)  # the input model is untouched


@pytest.mark.parametrize("name", METHODS)
def test_saving_and_loading_only_trainable_parameters_restores_outputs(name: str, images, tmp_path: Path):
    model = build(name)
    perturb_trainable(model)
    path = tmp_path / "trainable.safetensors"
    save_file({n: p.detach().contiguous() for n, p in trainable(model).items()}, str(path))
    restored = build(name)  # same backbone, fresh method parameters
    missing, unexpected = restored.load_state_dict(load_file(str(path)), strict=False)
    assert not unexpected and not set(missing) & set(trainable(restored))
    torch.testing.assert_close(features(restored, images), features(model, images), atol=0, rtol=0)


@pytest.mark.parametrize("name", METHODS)
def test_one_seed_gives_identical_results_twice(name: str):
    generator = torch.Generator().manual_seed(0)
    data = SplitData(
        torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=generator), torch.arange(16) % CLASSES
    )
    cfg = TrainConfig(epochs=1, batch_size=8, warmup_epochs=0, log_every=1)
    results = []
    for _ in range(2):
        model = build(name, seed=7)
        method = method_of(model)
        merge = method.merge if method.mergeable else None
        results.append(
            train_and_evaluate(
                model, method.no_weight_decay(model), data, data, cfg, torch.device("cpu"), 7, merge=merge
            )
        )
    assert results[0].final_train_loss == results[1].final_train_loss and results[0].top1 == results[1].top1
