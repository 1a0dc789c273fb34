"""VPT (shallow, deep), the NOAH Adapter-8 baseline and AdaptFormer: exact trainable counts on
ViT-B/16 (built on the meta device) and each method's equation against a few-line computation by
hand on vit_micro_patch4_32."""

from __future__ import annotations

import math

import pytest
import timm
import torch
import torch.nn.functional as F
from timm.layers import DropPath
from timm.models.vision_transformer import ParallelScalingBlock, VisionTransformer

import peftbench
import peftbench.backbone  # noqa: F401  (registers vit_micro_patch4_32)
from peftbench.api import method_of
from peftbench.errors import PeftbenchError
from peftbench.methods import get_method
from peftbench.methods.adapter import Adapter, AdaptFormer
from peftbench.methods.vpt import VPTDeep, VPTShallow, prompt_init_bound

NAMES = ["vpt_shallow", "vpt_deep", "adapter", "adaptformer"]
L = 10  # default prompt length


def micro(seed: int = 0) -> VisionTransformer:
    torch.manual_seed(seed)
    return timm.create_model("vit_micro_patch4_32", num_classes=5)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def pre_logits(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    return model.forward_head(model.forward_features(images), pre_logits=True)


def expand(prompts: torch.Tensor, batch: int) -> torch.Tensor:
    return prompts.expand(batch, -1, -1)


# ViT-B/16, 100 classes: head 768 * 100 + 100 = 76,900; depth 12, width 768
@pytest.mark.parametrize(
    "name, expected",
    [
        ("vpt_shallow", 84_580),  # 10 * 768 + head
        ("vpt_deep", 169_060),  # 12 * 10 * 768 + head
        ("adapter", 233_668),  # 12 * (768 * 8 + 8 + 8 * 768 + 768) + head
        ("adaptformer", 1_266_532),  # 12 * (768 * 64 + 64 + 64 * 768 + 768) + head
    ],
)
def test_trainable_count_on_vit_base_built_on_meta(name: str, expected: int):
    with torch.device("meta"):
        model = timm.create_model("vit_base_patch16_224", num_classes=100)
    get_method(name)().apply(model)
    for parameter in model.head.parameters():
        parameter.requires_grad_(True)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == expected
    assert {p.device.type for p in model.parameters()} == {"meta"}


def test_vpt_shallow_equals_blocks_run_by_hand_on_cls_prompts_patches(images):
    model = micro()
    blocks, norm = list(model.blocks), model.norm
    VPTShallow().apply(model)
    model.eval()
    prompts = model.norm_pre.prompts
    with torch.no_grad():
        x = model._pos_embed(model.patch_embed(images))  # [cls, patches] + position embedding
        seq = torch.cat((x[:, :1], expand(prompts, 2), x[:, 1:]), dim=1)
        for block in blocks:
            seq = block(seq)
        seq = norm(seq)
        torch.testing.assert_close(model.forward_features(images), torch.cat((seq[:, :1], seq[:, 1 + L :]), dim=1))
        torch.testing.assert_close(pre_logits(model, images), seq[:, 0])


def test_vpt_deep_block_i_sees_its_own_prompts_after_the_cls_token(images):
    model = micro()
    blocks, norm = list(model.blocks), model.norm
    VPTDeep().apply(model)
    model.eval()
    prompts = [model.norm_pre.prompts] + [model.blocks[i].prompts for i in range(1, len(blocks))]
    seen: list[torch.Tensor] = []
    for block in blocks:
        block.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    with torch.no_grad():
        features = pre_logits(model, images)
        assert len(seen) == len(blocks)
        for block_input, block_prompts in zip(seen, prompts):
            torch.testing.assert_close(block_input[:, 1 : 1 + L], expand(block_prompts, 2), atol=0, rtol=0)
        seen.clear()
        x = model._pos_embed(model.patch_embed(images))
        seq = torch.cat((x[:, :1], expand(prompts[0], 2), x[:, 1:]), dim=1)
        for i, block in enumerate(blocks):
            seq = torch.cat((seq[:, :1], expand(prompts[i], 2), seq[:, 1 + L :]), dim=1)
            seq = block(seq)
        torch.testing.assert_close(features, norm(seq)[:, 0])


@pytest.mark.parametrize("method", [VPTShallow(), VPTDeep(prompt_dropout=0.0)])
def test_vpt_goes_after_all_prefix_tokens_and_average_pooling_ignores_the_prompts(method):
    torch.manual_seed(0)
    model = VisionTransformer(
        img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2, num_classes=3, reg_tokens=2, global_pool="avg"
    )
    blocks = list(model.blocks)
    method.apply(model)
    model.eval()
    images = torch.randn(2, 3, 16, 16)
    prefix = model.num_prefix_tokens
    assert prefix == 3  # cls + 2 registers: unchanged by VPT
    prompts = [model.norm_pre.prompts] + [b.prompts for b in list(model.blocks)[1:] if method.deep]
    with torch.no_grad():
        x = model._pos_embed(model.patch_embed(images))
        seq = torch.cat((x[:, :prefix], expand(prompts[0], 2), x[:, prefix:]), dim=1)
        for i, block in enumerate(blocks):
            if i and method.deep:
                seq = torch.cat((seq[:, :prefix], expand(prompts[i], 2), seq[:, prefix + L :]), dim=1)
            seq = block(seq)
        patches = seq[:, prefix + L :]  # the final norm is the identity with average pooling
        features = model.forward_features(images)
        assert features.shape == (2, prefix + 16, 32)
        torch.testing.assert_close(pre_logits(model, images), model.fc_norm(patches.mean(dim=1)))


def test_vpt_init_is_the_released_uniform_bound_and_dropout_defaults():
    model = micro()
    VPTDeep().apply(model)
    bound = math.sqrt(6.0 / (3 * 4 * 4 + 128))
    assert prompt_init_bound((4, 4), 128) == pytest.approx(bound)
    trainable = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("head")]
    assert len(trainable) == 4 and all(p.shape == (1, L, 128) for p in trainable)
    values = torch.cat([p.detach().flatten() for p in trainable])
    assert values.abs().max() <= bound and values.abs().max() > 0.9 * bound
    assert VPTShallow().prompt_dropout == 0.0 and VPTDeep().prompt_dropout == 0.1
    assert VPTShallow.train_defaults["optimizer"] == "sgd" and not VPTShallow.mergeable


def test_vpt_prompt_dropout_acts_in_training_only(images):
    model = micro()
    blocks = list(model.blocks)
    VPTDeep(prompt_dropout=0.5).apply(model)
    seen: list[torch.Tensor] = []
    blocks[2].register_forward_pre_hook(lambda module, args: seen.append(args[0][:, 1 : 1 + L]))
    with torch.no_grad():
        model.train()(images)
        model.eval()(images)
    train_prompts, eval_prompts = seen
    assert (train_prompts == 0).any() and not (eval_prompts == 0).any()
    assert not torch.equal(train_prompts[0], train_prompts[1])  # one mask per image


def test_adapter_block_output_is_x_plus_attn_plus_m_plus_quickgelu_bottleneck_of_m():
    model = micro()
    Adapter().apply(model)
    model.eval()
    block = model.blocks[0]
    adapter = block.drop_path2.adapter
    x = torch.randn(2, 65, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a = x + block.attn(block.norm1(x))
        m = block.mlp(block.norm2(a))
        h = F.linear(m, adapter.down.weight, adapter.down.bias)
        expected = a + m + F.linear(h * torch.sigmoid(1.702 * h), adapter.up.weight, adapter.up.bias)
        torch.testing.assert_close(block(x), expected)


def test_adapter_init_as_written_is_xavier_with_tiny_biases_so_not_the_identity(images):
    model, plain = micro(), micro()
    Adapter(init="as_written").apply(model)
    adapter = model.blocks[0].drop_path2.adapter
    assert adapter.down.weight.shape == (8, 128) and adapter.dropout.p == 0.1
    for linear in (adapter.down, adapter.up):
        fan_out, fan_in = linear.weight.shape
        assert linear.weight.abs().max() <= math.sqrt(6.0 / (fan_in + fan_out))
        assert 0 < linear.bias.abs().max() < 1e-4
    with torch.no_grad():
        assert not torch.allclose(pre_logits(model.eval(), images), pre_logits(plain.eval(), images))


def test_adapter_effective_init_is_noahs_trunc_normal_with_zero_biases():
    """NOAH's init_weights('') re-initialises the adapter's Linears after their Xavier init."""
    torch.manual_seed(0)
    model = micro()
    Adapter().apply(model)
    weights = torch.cat([b.drop_path2.adapter.down.weight.flatten() for b in model.blocks])
    assert weights.std().item() == pytest.approx(0.02, rel=0.1) and weights.abs().max() <= 2.0
    for block in model.blocks:
        adapter = block.drop_path2.adapter
        assert not adapter.down.bias.any() and not adapter.up.bias.any() and adapter.up.weight.any()
    with pytest.raises(PeftbenchError, match="init must be"):
        Adapter(init="xavier")


def test_adaptformer_block_output_adds_scaled_relu_bottleneck_of_the_residual_stream():
    model = micro()
    norm2, mlp = model.blocks[0].norm2, model.blocks[0].mlp
    AdaptFormer().apply(model)
    model.eval()
    block = model.blocks[0]
    adapter = block.drop_path2.adapter
    with torch.no_grad():
        adapter.up.weight.normal_(0, 0.1, generator=torch.Generator().manual_seed(2))  # zero at init
        adapter.up.bias.fill_(0.01)
        x = torch.randn(2, 65, 128, generator=torch.Generator().manual_seed(1))
        a = x + block.attn(block.norm1(x))
        bottleneck = F.linear(
            torch.relu(F.linear(a, adapter.down.weight, adapter.down.bias)), adapter.up.weight, adapter.up.bias
        )
        expected = a + mlp(norm2(a)) + 0.1 * bottleneck
        torch.testing.assert_close(block(x), expected)


def test_adaptformer_adds_its_adapter_after_the_mlp_branchs_drop_path():
    """AdaptFormer's Block: x = residual + drop_path(mlp(norm2(x))) + adapt_x: a dropped branch keeps the adapter."""
    model = micro()
    AdaptFormer().apply(model)
    block = model.blocks[0]
    adapter = block.drop_path2.adapter
    block.drop_path2.drop_path = DropPath(1.0 - 1e-9)  # drops the whole MLP branch in training
    block.train()
    with torch.no_grad():
        adapter.up.weight.normal_(0, 0.1, generator=torch.Generator().manual_seed(2))
        adapter.dropout.p = 0.0
        x = torch.randn(2, 65, 128, generator=torch.Generator().manual_seed(1))
        a = x + block.attn(block.norm1(x))
        expected = a + 0.1 * adapter(a)
        torch.testing.assert_close(block(x), expected)


def test_adaptformer_init_leaves_the_backbone_function_unchanged(images):
    model, plain = micro(), micro()
    AdaptFormer().apply(model)
    adapter = model.blocks[0].drop_path2.adapter
    assert adapter.down.weight.abs().sum() > 0 and adapter.down.weight.shape == (64, 128)
    assert not adapter.up.weight.any() and not adapter.up.bias.any() and not adapter.down.bias.any()
    with torch.no_grad():
        torch.testing.assert_close(pre_logits(model.eval(), images), pre_logits(plain.eval(), images), atol=0, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_merge_raises_a_clear_error(name: str):
    model = peftbench.build_model(name, "vit_micro_patch4_32", 5, pretrained=False)
    with pytest.raises(PeftbenchError, match="cannot be merged"):
        peftbench.merge(model)
    with pytest.raises(NotImplementedError, match=f"'{name}' cannot be merged"):
        method_of(model).merge(model)


@pytest.mark.parametrize(
    "make",
    [
        lambda: VPTShallow(prompt_len=0),
        lambda: VPTDeep(prompt_dropout=1.0),
        lambda: Adapter(dim=0),
        lambda: AdaptFormer(dropout=-0.1),
    ],
)
def test_invalid_options_are_refused(make):
    with pytest.raises(PeftbenchError):
        make()


@pytest.mark.parametrize("method", [Adapter(), AdaptFormer()])
def test_adapters_refuse_blocks_other_than_timms_pre_norm_block(method):
    model = VisionTransformer(
        img_size=16, patch_size=4, embed_dim=32, depth=1, num_heads=2, num_classes=3, block_fn=ParallelScalingBlock
    )
    with pytest.raises(PeftbenchError, match="pre-norm residual blocks"):
        method.apply(model)


# ------------------------------------------------------------------------------------- VPT on Swin


def swin_micro(method: str, seed: int = 0, **options) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = peftbench.build_model(method, "swin_micro_patch2_window4_32", 5, pretrained=False, **options)
    torch.nn.init.normal_(model.head.fc.weight, std=0.1)  # a zero head would hide the prompts' effect
    return model.eval()


@pytest.mark.parametrize("method", ["vpt_shallow", "vpt_deep"])
def test_vpt_on_swin_scores_each_image_alone_whatever_the_batch(method: str):
    """VPT's Swin code pairs windows with other images' prompts in a batch (methods/vpt_swin.py); ours does not."""
    model, images = swin_micro(method), torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        batch = model(images)
        alone = torch.cat([model(images[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(batch, alone, rtol=0, atol=1e-5)
    with torch.no_grad():
        plain = peftbench.build_model("linear", "swin_micro_patch2_window4_32", 5, pretrained=False)
    assert not torch.allclose(model.forward_features(images).flatten(1), plain.forward_features(images).mean((1, 2)))


def test_vpt_on_swin_pools_the_prompts_with_the_patches_and_merges_them_to_the_next_width():
    model = swin_micro("vpt_shallow")
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    seen, last = [], []  # what block 0 of stage 2 receives and the last block returns: (grid, prompts, deep)
    model.layers[1].blocks[0].register_forward_pre_hook(lambda module, args: seen.append(args[0]) and None)
    model.layers[1].blocks[1].register_forward_hook(lambda module, args, out: last.append(out) and None)
    with torch.no_grad():
        pooled = model.forward_features(images)
    ((grid, prompts, _),) = seen
    assert prompts.shape == (2, L, 64) and grid.shape == (2, 8, 8, 64)  # stage 2: width 64 after merging
    assert pooled.shape == (2, 1, 1, 64)  # one "pixel" for timm's average-pooling head
    ((grid, prompts, _),) = last
    norm = model.norm.inner
    expected = torch.cat((norm(prompts), norm(grid).flatten(1, 2)), dim=1).mean(1)  # 64 patches and L prompts
    torch.testing.assert_close(pooled[:, 0, 0], expected)


def test_vpt_deep_on_swin_gives_every_block_but_the_first_its_own_prompts_at_its_width():
    model = swin_micro("vpt_deep")
    own = {n: tuple(p.shape) for n, p in model.named_parameters() if p.requires_grad and not n.startswith("head")}
    assert own == {"patch_embed.prompts": (1, L, 32), "layers.0.blocks.1.prompts": (1, L, 32),
                   "layers.1.blocks.0.prompts": (1, L, 64), "layers.1.blocks.1.prompts": (1, L, 64)}  # fmt: skip
    bound = prompt_init_bound((2, 2), 32)  # every stage's bound reads the patch embedding's width, as theirs
    assert all(p.abs().max() <= bound for n, p in model.named_parameters() if n.endswith("prompts"))


def test_vpt_trainable_counts_on_swin_b_built_on_meta():
    with torch.device("meta"):
        shallow, deep = (timm.create_model("swin_base_patch4_window7_224", num_classes=100) for _ in range(2))
    VPTShallow().apply(shallow)
    VPTDeep().apply(deep)
    counts = [sum(p.numel() for p in m.parameters() if p.requires_grad) for m in (shallow, deep)]
    assert counts == [L * 128, L * (2 * 128 + 2 * 256 + 18 * 512 + 2 * 1024)]  # 1,280 and 120,320 without the head


def test_vpt_on_swin_drops_shallow_prompts_per_image_and_deep_ones_once_per_stage_for_the_batch():
    model = swin_micro("vpt_deep", prompt_dropout=0.5).train()
    seen = []
    model.layers[1].blocks[0].register_forward_pre_hook(lambda module, args: seen.append(args[0]) and None)
    with torch.no_grad():
        model(torch.randn(3, 3, 32, 32))
    ((_, _, deep),) = seen  # stage 2's two blocks' prompts, after one dropout draw
    assert deep.shape == (2, L, 64) and (deep == 0).any()
    kept = deep != 0
    own = torch.cat([model.layers[1].blocks[i].prompts for i in (0, 1)])
    torch.testing.assert_close(deep[kept], 2 * own[kept])  # inverted dropout at p = 0.5
    model.eval()
    shallow = model.patch_embed(torch.zeros(3, 3, 32, 32))[1]
    model.train()
    dropped = model.patch_embed(torch.zeros(3, 3, 32, 32))[1]
    assert not torch.equal(dropped[0], dropped[1]) and torch.equal(shallow[0], shallow[1])  # a mask per image
