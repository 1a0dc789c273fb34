"""Weight files in every accepted format load back to the same backbone; missing defaults fail fast."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.models.vision_transformer import VisionTransformer

from peftbench import backbone
from peftbench.errors import PeftbenchError

MICRO = "vit_micro_patch4_32"


def to_flax_npz(model: VisionTransformer, path: Path, pre_logits: bool = False) -> None:
    """Write a timm ViT in the key layout of Google's original ViT `.npz` release: the inverse of
    timm's `_load_weights`. `pre_logits` adds the representation layer of the in21k release."""
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    width, heads = model.embed_dim, model.blocks[0].attn.num_heads
    out = {
        "embedding/kernel": state["patch_embed.proj.weight"].transpose(2, 3, 1, 0),  # OIHW -> HWIO
        "embedding/bias": state["patch_embed.proj.bias"],
        "cls": state["cls_token"],
        "Transformer/posembed_input/pos_embedding": state["pos_embed"],
        "Transformer/encoder_norm/scale": state["norm.weight"],
        "Transformer/encoder_norm/bias": state["norm.bias"],
    }
    if "head.weight" in state:
        out.update({"head/kernel": state["head.weight"].T, "head/bias": state["head.bias"]})
    if pre_logits:
        out["pre_logits/kernel"] = np.eye(width, dtype=np.float32)
        out["pre_logits/bias"] = np.zeros(width, dtype=np.float32)
    for i in range(len(model.blocks)):
        out.update(_flax_block(state, f"blocks.{i}.", f"Transformer/encoderblock_{i}/", width, heads))
    np.savez(path, **out)


def _flax_block(state: dict[str, np.ndarray], src: str, dst: str, width: int, heads: int) -> dict[str, np.ndarray]:
    """One encoder block: q/k/v kernels (D, heads, head_dim), the out kernel (heads, head_dim, D)."""
    qkv_w = state[f"{src}attn.qkv.weight"].reshape(3, width, width)  # (q|k|v, out, in)
    qkv_b = state[f"{src}attn.qkv.bias"].reshape(3, heads, width // heads)
    attn = f"{dst}MultiHeadDotProductAttention_1/"
    out = {
        f"{dst}LayerNorm_0/scale": state[f"{src}norm1.weight"],
        f"{dst}LayerNorm_0/bias": state[f"{src}norm1.bias"],
        f"{dst}LayerNorm_2/scale": state[f"{src}norm2.weight"],
        f"{dst}LayerNorm_2/bias": state[f"{src}norm2.bias"],
        f"{attn}out/kernel": state[f"{src}attn.proj.weight"].reshape(width, heads, width // heads).transpose(1, 2, 0),
        f"{attn}out/bias": state[f"{src}attn.proj.bias"],
    }
    for j, name in enumerate(("query", "key", "value")):
        out[f"{attn}{name}/kernel"] = qkv_w[j].T.reshape(width, heads, width // heads)
        out[f"{attn}{name}/bias"] = qkv_b[j]
    for j in range(2):
        out[f"{dst}MlpBlock_3/Dense_{j}/kernel"] = state[f"{src}mlp.fc{j + 1}.weight"].T
        out[f"{dst}MlpBlock_3/Dense_{j}/bias"] = state[f"{src}mlp.fc{j + 1}.bias"]
    return out


def write_torch(state: dict[str, torch.Tensor], path: Path, layout: str) -> None:
    if layout == "plain":
        torch.save(state, path)
    elif layout in ("model", "state_dict"):
        torch.save({layout: state, "epoch": 3}, path)
    else:  # DataParallel / DDP
        torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)


@pytest.fixture(scope="module")
def source() -> VisionTransformer:
    """A micro ViT with random weights and a 10-class head."""
    torch.manual_seed(0)
    return timm.create_model(MICRO, num_classes=10).eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def assert_same_backbone(model: VisionTransformer, source: VisionTransformer, images: torch.Tensor) -> None:
    with torch.no_grad():
        assert torch.equal(model.eval().forward_features(images), source.forward_features(images))
    assert model.head.out_features == 3 and not model.head.weight.any() and not model.head.bias.any()


@pytest.mark.parametrize("name", ["weights.safetensors", "plain.pth", "model.pth", "state_dict.pt", "module.bin"])
def test_state_dict_files_load_back_identically(tmp_path: Path, source, images, name: str):
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    path = tmp_path / name
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        write_torch(state, path, path.stem)
    model, identity = backbone.create_backbone(MICRO, 3, path)
    assert identity == backbone.file_sha256(path)
    assert_same_backbone(model, source, images)


@pytest.mark.parametrize("pre_logits", [False, True], ids=["plain", "in21k_pre_logits"])
def test_flax_npz_loads_back_identically(tmp_path: Path, source, images, pre_logits: bool):
    path = tmp_path / "ViT-micro.npz"
    to_flax_npz(source, path, pre_logits=pre_logits)
    model, _ = backbone.create_backbone(MICRO, 3, path)
    assert_same_backbone(model, source, images)


def test_npz_leaves_the_head_alone(tmp_path: Path, source):
    """timm's reader copies an npz head of matching shape; load_weights must not."""
    path = tmp_path / "ViT-micro.npz"
    to_flax_npz(source, path)
    model = timm.create_model(MICRO, num_classes=10)
    head = model.head.weight.clone()
    backbone.load_weights(model, path)
    assert torch.equal(model.head.weight, head) and not torch.equal(head, source.head.weight)
    assert torch.equal(model.blocks[3].attn.proj.weight, source.blocks[3].attn.proj.weight)


@pytest.mark.parametrize(
    "other, found",
    [
        (dict(depth=2), "depth 2, patch 4x4, width 128"),
        (dict(patch_size=8), "depth 4, patch 8x8, width 128"),
        (dict(embed_dim=64, num_heads=2), "depth 4, patch 4x4, width 64"),
    ],
)
@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_another_architecture_is_a_clear_error(tmp_path: Path, other: dict, found: str, suffix: str):
    kwargs = dict(img_size=32, patch_size=4, embed_dim=128, depth=4, num_heads=4, num_classes=0)
    model = VisionTransformer(**{**kwargs, **other})
    path = tmp_path / f"other{suffix}"
    if suffix == ".npz":
        to_flax_npz(model, path)
    else:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    expected = f"do not fit the model {MICRO} \\(depth 4, patch 4x4, width 128\\): the file holds a ViT of {found}"
    with pytest.raises(PeftbenchError, match=expected):
        backbone.create_backbone(MICRO, 3, path)


def test_unknown_and_unreadable_files_are_clear_errors(tmp_path: Path):
    path = tmp_path / "weights.ckpt"
    path.write_bytes(b"\0" * 8)
    accepted = r"unknown format '\.ckpt'; accepted: \.npz .*\.safetensors, \.pth/\.pt/\.bin"
    with pytest.raises(PeftbenchError, match=accepted):
        backbone.create_backbone(MICRO, 3, path)
    not_npz = tmp_path / "weights.npz"
    not_npz.write_bytes(b"\0" * 8)
    with pytest.raises(PeftbenchError, match="cannot read weights"):
        backbone.create_backbone(MICRO, 3, not_npz)
    no_vit = tmp_path / "other.npz"
    np.savez(no_vit, w=np.zeros(3))
    with pytest.raises(PeftbenchError, match="not a ViT in Google's Flax layout"):
        backbone.create_backbone(MICRO, 3, no_vit)


@pytest.fixture
def empty_hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache, whatever this machine's holds."""
    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


def test_default_weights_missing_offline_fail_fast_in_one_line(empty_hf_cache: Path):
    model = "vit_base_patch16_224.orig_in21k"
    start = time.perf_counter()
    with pytest.raises(PeftbenchError) as error:
        backbone.create_backbone(model, 3, "default")
    assert time.perf_counter() - start < 5  # no download attempt (timm's retries took 47 s here)
    message = str(error.value)
    assert "\n" not in message and f"'{model}'" in message and str(empty_hf_cache) in message
    assert "model.safetensors of the hub repo timm/vit_base_patch16_224.orig_in21k" in message
    assert "imagenet21k/ViT-B_16.npz" in message
    assert "--weights PATH" in message and "--no-pretrained" in message


def test_default_weights_come_from_the_hf_cache(empty_hf_cache: Path, images):
    """A hub file already cached is loaded without the network."""
    name = "vit_tiny_patch16_224.augreg_in21k_ft_in1k"
    torch.manual_seed(0)
    source = VisionTransformer(img_size=224, patch_size=16, embed_dim=192, depth=12, num_heads=3, num_classes=0).eval()
    repo = empty_hf_cache / f"models--{timm.models.get_pretrained_cfg(name).hf_hub_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(snapshot / "model.safetensors"))
    model, identity = backbone.create_backbone(name, 3, "default")
    assert identity == f"timm:{name}"
    assert torch.equal(model.blocks[11].mlp.fc2.weight, source.blocks[11].mlp.fc2.weight)
    assert model.head.out_features == 3 and not model.head.weight.any()
