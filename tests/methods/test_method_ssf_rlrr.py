"""SSF and RLRR: their equations on one layer, exact trainable counts, RLRR's decay split, merging."""

from __future__ import annotations

import timm
import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

import peftbench.backbone  # noqa: F401  (registers vit_micro_patch4_32)
from peftbench.methods._scale_shift import SSFWrapper
from peftbench.methods.rlrr import RLRR, RLRRLinear
from peftbench.methods.ssf import SSF


def adapted(method, model: nn.Module) -> nn.Module:
    """`method` applied as the engine does: the head stays trainable."""
    method.apply(model)
    for parameter in model.head.parameters():
        parameter.requires_grad_(True)
    return model


def trainable(model: nn.Module) -> dict[str, nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def meta_vit_b() -> VisionTransformer:
    with torch.device("meta"):
        return timm.create_model("vit_base_patch16_224", num_classes=100)


def micro_vit() -> VisionTransformer:
    torch.manual_seed(0)
    model = timm.create_model("vit_micro_patch4_32", num_classes=10)
    nn.init.normal_(model.head.weight, std=0.02)
    return model


def randomise(parameters: dict[str, nn.Parameter]) -> None:
    with torch.no_grad():
        for parameter in parameters.values():
            parameter.normal_(0.0, 0.5)


def test_ssf_folded_linear_is_scale_times_output_plus_shift():
    torch.manual_seed(0)
    linear = nn.Linear(6, 5)
    wrapper = SSFWrapper(linear)
    randomise(dict(wrapper.ssf.named_parameters()))
    x = torch.randn(4, 6)
    gamma, beta = wrapper.ssf.scale.detach(), wrapper.ssf.shift.detach()
    expected = gamma * (x @ linear.weight.T + linear.bias) + beta
    torch.testing.assert_close(wrapper(x), expected)
    folded = wrapper.fold()
    assert type(folded) is nn.Linear
    torch.testing.assert_close(folded(x), expected)


def test_rlrr_merged_qkv_slices_each_use_their_own_vectors():
    torch.manual_seed(0)
    model = adapted(RLRR(), micro_vit())
    qkv = model.blocks[1].attn.qkv
    assert isinstance(qkv, RLRRLinear)
    randomise(trainable(model))
    weight, bias = qkv.layer.weight.detach().clone(), qkv.layer.bias.detach().clone()
    merged = RLRR().merge(model).blocks[1].attn.qkv
    assert type(merged) is nn.Linear
    dim = weight.shape[1]
    for index in range(3):  # q, k, v
        rows = slice(index * dim, (index + 1) * dim)
        s_in = qkv.s_in[index].detach()
        s_out, f = qkv.s_out[rows, 0].detach(), qkv.bias_shift[rows].detach()
        w, w_merged = weight[rows], merged.weight[rows].detach()
        torch.testing.assert_close(w_merged - w, torch.outer(s_out, s_in) * w)
        torch.testing.assert_close(merged.bias[rows].detach(), bias[rows] + f)


def test_rlrr_single_linear_equation():
    torch.manual_seed(0)
    linear = nn.Linear(6, 5)
    wrapper = RLRRLinear(linear)
    randomise(dict(wrapper.named_parameters()))
    x = torch.randn(4, 6)
    s_in, s_out, f = wrapper.s_in[0].detach(), wrapper.s_out[:, 0].detach(), wrapper.bias_shift.detach()
    w, b = linear.weight.detach(), linear.bias.detach()
    expected = x @ w.T + s_out * ((s_in * x) @ w.T) + b + f
    torch.testing.assert_close(wrapper(x), expected)


def test_trainable_counts_vit_b16_on_meta():
    ssf = trainable(adapted(SSF(), meta_vit_b()))
    assert sum(p.numel() for p in ssf.values()) == 282_724
    rlrr = trainable(adapted(RLRR(), meta_vit_b()))
    assert sum(p.numel() for p in rlrr.values()) == 365_668
    block = sum(p.numel() for n, p in rlrr.items() if n.startswith("blocks.0."))
    assert block == 23_808
    assert all(p.device.type == "meta" for p in rlrr.values())


def test_rlrr_init_as_the_authors():
    model = adapted(RLRR(), micro_vit())
    fc1 = model.blocks[0].mlp.fc1
    out_features, in_features = fc1.layer.weight.shape
    assert fc1.s_in.shape == (1, in_features) and fc1.s_out.shape == (out_features, 1)
    assert fc1.s_in.abs().max() <= (6 / in_features) ** 0.5 and fc1.s_out.abs().max() <= 6**0.5
    assert torch.count_nonzero(fc1.bias_shift) == 0
    assert model.blocks[0].attn.qkv.s_in.shape == (3, in_features)


def test_rlrr_weight_decay_split_by_name():
    model = adapted(RLRR(), meta_vit_b())
    names = set(trainable(model))
    no_decay = RLRR().no_weight_decay(model)
    assert no_decay <= names
    expected_plain = {"head.bias", "norm.ssf.scale", "norm.ssf.shift"}
    for path in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"):
        expected_plain.add(f"blocks.3.{path}.bias_shift")
        assert f"blocks.3.{path}.s_in" not in no_decay and f"blocks.3.{path}.s_out" not in no_decay
    for norm in ("norm1", "norm2"):
        expected_plain |= {f"blocks.3.{norm}.ssf.scale", f"blocks.3.{norm}.ssf.shift"}
    assert expected_plain <= no_decay
    decayed = names - no_decay
    assert {"head.weight", "patch_embed.proj.ssf.scale", "patch_embed.proj.ssf.shift"} <= decayed
    per_block = 2 * (3 * 768 + 768 + 768 + 3072)  # s_in and s_out hold the same count per block
    assert sum(model.get_parameter(n).numel() for n in decayed) == 12 * per_block + 2 * 768 + 76_800
    assert len(decayed) == 12 * 4 * 2 + 2 + 1  # s_in, s_out of 4 layers per block; patch pair; head


def check_merge(method) -> None:
    model = adapted(method, micro_vit()).eval()
    reference = {k: v.shape for k, v in micro_vit().state_dict().items()}
    randomise(trainable(model))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    merged = method.merge(model).eval()
    assert type(merged) is VisionTransformer
    assert not any(isinstance(m, (SSFWrapper, RLRRLinear)) for m in merged.modules())
    assert {k: v.shape for k, v in merged.state_dict().items()} == reference
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        unmerged_features = model.forward_head(model.forward_features(x), pre_logits=True)
        merged_features = merged.forward_head(merged.forward_features(x), pre_logits=True)
    torch.testing.assert_close(merged_features, unmerged_features, atol=1e-5, rtol=1e-5)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())  # input untouched


def test_ssf_merge_matches_unmerged_features():
    check_merge(SSF())


def test_rlrr_merge_matches_unmerged_features():
    check_merge(RLRR())
