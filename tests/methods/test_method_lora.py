"""LoRA (q, v), NOAH's fused-qkv LoRA and BitFit: equations, trainable sets, counts, merging."""

from __future__ import annotations

import math

import pytest
import timm
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import nn

import peftbench
import peftbench.backbone  # noqa: F401  (registers vit_micro_patch4_32)
from peftbench.errors import PeftbenchError
from peftbench.methods import get_method
from peftbench.methods.base import Method
from peftbench.methods.lora import LoRA, LoRAQueryValue, LowRankQKV
from peftbench.methods.lora_qkv import FusedLoRA

IN, WIDTH, RANK = 16, 12, 4


def fused_qkv(seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(IN, 3 * WIDTH)


def micro_vit(num_classes: int = 10) -> VisionTransformer:
    torch.manual_seed(0)
    return timm.create_model("vit_micro_patch4_32", pretrained=False, num_classes=num_classes)


def adapt(method_name: str, model: nn.Module, **options) -> Method:
    """What the engine does: apply the method, then keep the head trainable."""
    method = get_method(method_name)(**options)
    method.apply(model)
    model.get_classifier().requires_grad_(True)
    return method


def trainable(model: nn.Module) -> dict[str, nn.Parameter]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


# --- lora: h = W0 x + (alpha / r) B A x on q and v only ---------------------------------------


def test_lora_init_is_kaiming_a_and_zero_b() -> None:
    layer = LoRAQueryValue(fused_qkv(), RANK, alpha=8.0, dropout=0.0)
    for p in ("q", "v"):
        assert layer.lora_A[p].shape == (RANK, IN) and layer.lora_B[p].shape == (WIDTH, RANK)
        assert torch.count_nonzero(layer.lora_B[p]) == 0
        # kaiming_uniform_(a=sqrt(5)) on (r, in): U(-1/sqrt(in), 1/sqrt(in))
        assert 0 < layer.lora_A[p].abs().max() <= 1 / math.sqrt(IN)
    assert torch.count_nonzero(layer.delta_weight()) == 0


def test_lora_equation_on_one_layer() -> None:
    base = fused_qkv()
    w0, b0 = base.weight.detach().clone(), base.bias.detach().clone()
    alpha = 6.0
    layer = LoRAQueryValue(base, RANK, alpha=alpha, dropout=0.0)
    with torch.no_grad():
        for p in ("q", "v"):
            layer.lora_A[p].normal_()
            layer.lora_B[p].normal_()
    scale = alpha / RANK
    merged = layer.fold().weight
    q, k, v = slice(0, WIDTH), slice(WIDTH, 2 * WIDTH), slice(2 * WIDTH, 3 * WIDTH)
    assert torch.equal(merged[k], w0[k])
    torch.testing.assert_close(merged[q], w0[q] + scale * layer.lora_B["q"] @ layer.lora_A["q"])
    torch.testing.assert_close(merged[v], w0[v] + scale * layer.lora_B["v"] @ layer.lora_A["v"])
    x = torch.randn(2, 5, IN)
    out = layer(x)
    torch.testing.assert_close(out, F.linear(x, merged, b0))
    assert torch.equal(out[..., k], F.linear(x, w0, b0)[..., k])


def test_lora_trains_only_the_low_rank_matrices_and_leaves_k_untouched() -> None:
    model = micro_vit()
    adapt("lora", model)
    names = set(trainable(model))
    expected = {f"blocks.{i}.attn.qkv.lora_{m}.{p}" for i in range(4) for m in "AB" for p in "qv"}
    assert names == expected | {"head.weight", "head.bias"}
    assert all(isinstance(block.attn.qkv, LowRankQKV) for block in model.blocks)


# --- lora_qkv: W = W0 + (A B)^T over q, k and v, no scaling ------------------------------------


def test_lora_qkv_equation_on_one_layer() -> None:
    base = fused_qkv()
    w0, b0 = base.weight.detach().clone(), base.bias.detach().clone()
    layer = FusedLoRA(base, RANK, dropout=0.1, init="effective").eval()
    assert layer.lora_A.shape == (IN, RANK) and layer.lora_B.shape == (RANK, 3 * WIDTH)
    with torch.no_grad():
        layer.lora_A.normal_()
        layer.lora_B.normal_()
    expected = w0 + (layer.lora_A @ layer.lora_B).T
    torch.testing.assert_close(layer.fold().weight, expected)
    x = torch.randn(2, 5, IN)
    torch.testing.assert_close(layer(x), F.linear(x, expected, b0))


def test_lora_qkv_dropout_acts_on_the_branch_input_only() -> None:
    layer = FusedLoRA(fused_qkv(), RANK, dropout=0.5, init="effective").train()
    x = torch.randn(4, 7, IN)
    torch.manual_seed(1)
    out = layer(x)
    torch.manual_seed(1)
    dropped = F.dropout(x, 0.5, training=True)
    torch.testing.assert_close(out, layer.base_layer(x) + dropped @ layer.lora_A @ layer.lora_B)


def test_lora_qkv_init_is_noahs_effective_trunc_normal() -> None:
    model = micro_vit()
    adapt("lora_qkv", model)
    a = torch.cat([b.attn.qkv.lora_A.detach().flatten() for b in model.blocks])
    b = torch.cat([b.attn.qkv.lora_B.detach().flatten() for b in model.blocks])
    for matrix in (a, b):  # trunc_normal(std 0.02), cut at +-2: nothing is cut in practice
        assert matrix.std().item() == pytest.approx(0.02, rel=0.1)
        assert matrix.mean().abs().item() < 0.002
    names = set(trainable(model))
    assert names == {f"blocks.{i}.attn.qkv.lora_{m}" for i in range(4) for m in "AB"} | {"head.weight", "head.bias"}


# --- bitfit: exactly the biases train ----------------------------------------------------------


def test_bitfit_trains_exactly_the_biases() -> None:
    model = micro_vit()
    biases = {
        f"{name}.bias"
        for name, module in model.named_modules()
        if isinstance(module, (nn.Linear, nn.LayerNorm, nn.Conv2d)) and module.bias is not None
    }
    assert {"patch_embed.proj.bias", "norm.bias", "blocks.0.norm1.bias", "blocks.0.norm2.bias"} <= biases
    adapt("bitfit", model)
    assert set(trainable(model)) == biases | {"head.weight"}


# --- counts and merging ------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "count"), [("lora", 371_812), ("lora_qkv", 371_812), ("bitfit", 179_812)])
def test_trainable_counts_vit_base_on_meta(method: str, count: int) -> None:
    with torch.device("meta"):
        model = timm.create_model("vit_base_patch16_224", num_classes=100)
        adapt(method, model)
    head = sum(p.numel() for p in model.get_classifier().parameters())
    assert head == 76_900
    assert sum(p.numel() for p in trainable(model).values()) == count


def pre_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model.forward_head(model.forward_features(x), pre_logits=True)


@pytest.mark.parametrize("method", ["lora", "lora_qkv", "bitfit"])
def test_merged_equals_unmerged(method: str) -> None:
    model = micro_vit()
    adapter = adapt(method, model, **({"dropout": 0.1} if method == "lora" else {}))
    torch.manual_seed(1)
    with torch.no_grad():
        for p in trainable(model).values():
            p.normal_(std=0.05)
    model.eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        before = pre_logits(model, x)
        merged = adapter.merge(model).eval()
        torch.testing.assert_close(pre_logits(merged, x), before, atol=1e-5, rtol=0)
        torch.testing.assert_close(pre_logits(model, x), before, atol=0, rtol=0)  # input model still usable
    assert type(merged) is VisionTransformer
    assert not any(isinstance(m, LowRankQKV) for m in merged.modules())
    assert set(merged.state_dict()) == set(micro_vit().state_dict())


@pytest.mark.parametrize("masks, same", [("per_projection", False), ("shared", True)])
def test_q_and_v_draw_their_own_dropout_masks_as_peft_unless_shared(masks: str, same: bool):
    torch.manual_seed(0)
    base = nn.Linear(16, 48)
    layer = LoRAQueryValue(base, rank=4, alpha=4.0, dropout=0.5, shared_mask=masks == "shared")
    with torch.no_grad():
        for p in ("q", "v"):  # identical branches: their outputs differ only through the masks
            layer.lora_A[p].copy_(torch.ones(4, 16))
            layer.lora_B[p].copy_(torch.ones(16, 4))
    layer.train()
    x = torch.randn(8, 16)
    q, _, v = (layer(x) - base(x)).chunk(3, dim=-1)
    assert torch.allclose(q, v, atol=1e-5) is same
    assert LoRA().dropout_masks == "per_projection" and LoRA(dropout_masks="shared").dropout_masks == "shared"
    with pytest.raises(PeftbenchError, match="dropout_masks"):
        LoRA(dropout_masks="one")


@pytest.mark.parametrize("name, per_task", [("fact_tt", {"cifar": (8, 1.0), "svhn": (16, 100.0)}),
                                            ("fact_tk", {"cifar": (32, 0.1)})])  # fmt: skip
def test_fact_paper_settings_take_the_per_task_rank_and_scale_and_fold(name: str, per_task: dict):
    """FacT's configs/{tt,tk}/<task>.yaml as data; the update folds into a plain timm ViT."""
    from peftbench.settings import resolve
    from peftbench.suites import get_suite
    from peftbench.sweeps.paper_settings import published

    vtab = get_suite("vtab1k")
    for task, (rank, scale) in per_task.items():
        train, options = resolve(get_method(name), vtab.defaults, published(name, vtab, vtab.task(task)).settings)
        assert (options["rank"], options["scale"]) == (rank, scale)
        assert (train.scheduler, train.head_init, train.precision, train.total_epochs) == (
            "timm-epoch",
            "linear",
            "fp32",
            100,
        )
    torch.manual_seed(0)
    model = peftbench.build_model(name, "vit_micro_patch4_32", 5, pretrained=False, rank=4)
    with torch.no_grad():
        for p in model.fact.parameters():
            p.normal_(0, 0.1)
        model.head.weight.normal_()
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    merged = peftbench.merge(model)
    assert not any("fact" in k for k in merged.state_dict())
    torch.testing.assert_close(merged(x), model(x), rtol=1e-4, atol=1e-4)
