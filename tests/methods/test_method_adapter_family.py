"""Houlsby's and Pfeiffer's adapters as PETL_Vision builds them (each block's equation against a
computation by hand on vit_micro_patch4_32, the drop path that runs twice, the effective init, the
grid), Adapter+'s post-block adapter, and RepAdapter's group-wise up projection and fold."""

from __future__ import annotations

import math

import pytest
import timm
import torch
import torch.nn.functional as F
from timm.layers import DropPath

import peftbench.backbone  # noqa: F401  (registers vit_micro_patch4_32)
from peftbench.api import adapt
from peftbench.errors import PeftbenchError
from peftbench.methods import get_method
from peftbench.sweeps.tuning import grid_points


def adapted(name: str, seed: int = 0, drop_path: float = 0.0, **options) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = timm.create_model("vit_micro_patch4_32", num_classes=5, drop_path_rate=drop_path)
    adapt(model, get_method(name)(**options))
    return model


def adapter_by_hand(adapter, m: torch.Tensor, scale: float) -> torch.Tensor:
    return m + scale * F.linear(F.relu(F.linear(m, adapter.down.weight, adapter.down.bias)), adapter.up.weight,
                                adapter.up.bias)  # fmt: skip


@pytest.mark.parametrize("name, branches", [("adapter_houlsby", (1, 2)), ("adapter_pfeiffer", (2,))])
def test_each_block_forward_equals_the_equation(name: str, branches: tuple[int, ...]):
    model = adapted(name, scale=0.5).eval()
    x = torch.randn(2, 65, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for block in model.blocks:
            expected = x
            for i, (norm, layer) in enumerate(((block.norm1, block.attn), (block.norm2, block.mlp)), start=1):
                m = layer(norm(expected))
                adapter = getattr(block, f"drop_path{i}").adapter if i in branches else None
                expected = expected + (adapter_by_hand(adapter, m, 0.5) if adapter is not None else m)
            torch.testing.assert_close(block(x), expected, rtol=0, atol=1e-6)
            x = expected
    untouched = {1, 2} - set(branches)
    assert all(not hasattr(getattr(model.blocks[0], f"drop_path{i}"), "adapter") for i in untouched)


def test_training_runs_the_drop_path_twice_as_their_block_does():
    """drop_path(drop_path(m) + s·A(drop_path(m))): a sample survives both masks with (1 - p)²."""
    model = adapted("adapter_pfeiffer", drop_path=0.5).train()
    wrapper = model.blocks[-1].drop_path2  # the last block's rate, 0.5
    m = torch.ones(4000, 1, 128)
    torch.manual_seed(3)
    out = wrapper(m)
    kept = (out.abs().sum(dim=(1, 2)) > 0).float().mean().item()
    assert abs(kept - 0.25) < 0.03  # two independent masks at keep 0.5


def test_effective_init_is_timms_reinitialisation_and_as_written_is_xavier():
    effective = adapted("adapter_houlsby").blocks[0].drop_path1.adapter
    written = adapted("adapter_houlsby", init="as_written").blocks[0].drop_path1.adapter
    for linear in (effective.down, effective.up):
        assert linear.bias.abs().max() == 0 and linear.weight.abs().max() < 0.12  # cut at ±2, i.e. 100 sigma
        assert abs(linear.weight.std().item() - 0.02) < 0.004
    bound = math.sqrt(6 / (128 + 8))
    assert written.down.weight.abs().max() <= bound and written.down.weight.abs().max() > 0.9 * bound
    assert 0 < written.up.bias.abs().max() < 1e-4


def test_their_grid_and_bad_options():
    grid = get_method("adapter_houlsby").tune_grid
    assert len(grid_points(grid)) == 2 * 2 * 4 * 4
    with pytest.raises(PeftbenchError, match="adapter_pfeiffer: init must be"):
        get_method("adapter_pfeiffer")(init="xavier")
    with pytest.raises(PeftbenchError, match="dim must be at least 1"):
        get_method("adapter_houlsby")(dim=0)


def test_repadapter_up_projection_is_group_wise_and_folds_into_qkv_and_fc1():
    """RepAdapter's B: output group g reads only input group g (their Conv1d groups=2); merged, the
    adapter disappears into attn.qkv and mlp.fc1 with equal outputs."""
    model = adapted("repadapter", scale=0.5)
    wrapper = model.blocks[0].attn.qkv
    with torch.no_grad():
        wrapper.up_weight.normal_()
    up = wrapper.dense_up()
    assert up.shape == (128, 8) and not up[:64, 4:].any() and not up[64:, :4].any() and up[:64, :4].all()
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
        model.eval()
        x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
        merged = get_method("repadapter")().merge(model)
        assert all(type(b.attn.qkv) is torch.nn.Linear and type(b.mlp.fc1) is torch.nn.Linear for b in merged.blocks)
        assert set(merged.state_dict()) == set(timm.create_model("vit_micro_patch4_32", num_classes=5).state_dict())
        torch.testing.assert_close(merged(x), model(x), rtol=0, atol=1e-5)
    with pytest.raises(PeftbenchError, match="dim must be a positive multiple of groups"):
        get_method("repadapter")(dim=7)


def test_adapter_plus_adds_a_channel_scaled_bottleneck_after_each_block():
    model = adapted("adapter_plus").eval()
    block = model.blocks[1]
    after = block.drop_path2
    with torch.no_grad():
        after.scaling.uniform_(0.5, 1.5)
        after.adapter.up.weight.normal_(std=0.1)
        x = torch.randn(2, 65, 128, generator=torch.Generator().manual_seed(5))
        x1 = x + block.attn(block.norm1(x))
        z = x1 + block.mlp(block.norm2.norm(x1))
        a = after.adapter
        expected = z + after.scaling * F.linear(F.gelu(F.linear(z, a.down.weight, a.down.bias)), a.up.weight, a.up.bias)
        torch.testing.assert_close(block(x), expected, rtol=0, atol=1e-5)
    fresh = adapted("adapter_plus").blocks[0].drop_path2
    assert fresh.adapter.down.weight.abs().max() <= 0.02 and bool((fresh.scaling == 1).all())
    assert not fresh.adapter.up.bias.any() and isinstance(fresh.adapter_drop_path, DropPath)
