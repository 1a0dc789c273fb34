"""Backbones: the registered micro ViT, weight files, the zero-initialised head."""

from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from peftbench import backbone
from peftbench.errors import PeftbenchError


def test_vit_micro_is_a_registered_timm_model():
    model = timm.create_model("vit_micro_patch4_32")
    assert model.patch_embed.img_size == (32, 32) and model.patch_embed.patch_size == (4, 4)
    assert model.embed_dim == 128 and len(model.blocks) == 4 and model.blocks[0].attn.num_heads == 4
    without_head = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("head."))
    per_block = 2 * 256 + (128 * 384 + 384) + (128 * 128 + 128) + (128 * 512 + 512) + (512 * 128 + 128)
    embeddings = (4 * 4 * 3 * 128 + 128) + 128 + 65 * 128  # patch conv, cls token, 64 + 1 positions
    assert without_head == embeddings + 4 * per_block + 256 == 808_064  # about 0.8 M
    assert backbone.model_input_size("vit_micro_patch4_32") == 32
    assert backbone.model_input_size("vit_base_patch16_224") == 224


def test_head_is_replaced_and_zero_initialised():
    model, identity = backbone.create_backbone("vit_micro_patch4_32", 7, None)
    assert identity == backbone.RANDOM_INIT
    assert model.head.out_features == 7
    assert model.head.weight.abs().sum() == 0 and model.head.bias.abs().sum() == 0


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_weights_round_trip_through_files_without_the_head(tmp_path: Path, suffix: str):
    torch.manual_seed(0)
    source = timm.create_model("vit_micro_patch4_32", num_classes=10)
    path = tmp_path / f"weights{suffix}"
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save({"model": {f"module.{k}": v for k, v in state.items()}}, path)
    model, identity = backbone.create_backbone("vit_micro_patch4_32", 3, path)
    assert identity == backbone.file_sha256(path) and len(identity) == 64
    assert torch.equal(model.blocks[2].mlp.fc1.weight, source.blocks[2].mlp.fc1.weight)
    assert model.head.weight.shape == (3, 128) and model.head.weight.abs().sum() == 0


def test_weights_of_another_architecture_are_refused(tmp_path: Path):
    path = tmp_path / "small.safetensors"
    other = timm.create_model("vit_tiny_patch16_224", num_classes=0)
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(path))
    with pytest.raises(PeftbenchError, match="do not fit the model"):
        backbone.create_backbone("vit_micro_patch4_32", 3, path)


def test_unknown_model_and_missing_weights_are_clear_errors(tmp_path: Path):
    with pytest.raises(PeftbenchError, match="unknown model 'vit_nope'"):
        backbone.create_backbone("vit_nope", 3, None)
    with pytest.raises(PeftbenchError, match="weights file not found"):
        backbone.create_backbone("vit_micro_patch4_32", 3, tmp_path / "none.safetensors")
    with pytest.raises(PeftbenchError, match="is a ResNet"):
        backbone.create_backbone("resnet18", 3, None)


def test_deit_distilled_models_train_both_heads_and_evaluate_their_mean():
    """DeiT's distilled ViT has a second head on the distillation token; both are replaced and train,
    and evaluation averages their logits as DeiT does (timm's forward_head outside distilled training)."""
    import peftbench
    from peftbench.api import method_of
    from peftbench.params import count_parameters

    model = peftbench.build_model("lora", "deit_tiny_distilled_patch16_224", 5, pretrained=False)
    heads = backbone.heads(model)
    assert [h.out_features for h in heads] == [5, 5] and all(p.requires_grad for h in heads for p in h.parameters())
    counts = count_parameters(model, backbone.head_parameter_names(model))
    assert counts["head"] == 2 * (192 * 5 + 5)
    with torch.no_grad():
        for head in heads:
            head.weight.normal_()
        model.eval()
        x = torch.randn(2, 3, 224, 224)
        tokens = model.forward_features(x)
        expected = (model.head(tokens[:, 0]) + model.head_dist(tokens[:, 1])) / 2
        torch.testing.assert_close(model(x), expected)
        torch.testing.assert_close(peftbench.merge(model)(x), expected, rtol=1e-4, atol=1e-4)
    assert method_of(model).name == "lora"
