"""Backbones: cut points, channels, local weights loaded strictly."""
import pytest
import torch
from safetensors.torch import save_file
from shared_paths import VGG_WEIGHTS, need_shared

from registry.models.backbones import ResNet50Backbone, VGG16Backbone


def test_vgg16_stops_at_conv5_3_before_its_relu():
    bb = VGG16Backbone()
    assert isinstance(bb.features[-1], torch.nn.Conv2d) and len(bb.features) == 29
    out = bb(torch.randn(1, 3, 64, 96))
    assert out.shape == (1, 512, 4, 6)
    assert (out < 0).any(), "conv5_3 is taken before the ReLU, so negative responses remain"


def test_resnet50_stops_after_layer3():
    out = ResNet50Backbone()(torch.randn(1, 3, 64, 96))
    assert out.shape == (1, 1024, 4, 6)


def test_shared_vgg16_weights_load():
    path = need_shared(VGG_WEIGHTS)
    bb = VGG16Backbone(weights=str(path))
    from safetensors.torch import load_file

    ref = load_file(str(path))
    assert torch.equal(bb.features[28].weight, ref["features.28.weight"])


def test_weights_with_missing_keys_are_rejected(tmp_path):
    state = {k: v for k, v in VGG16Backbone().state_dict().items() if k != "features.28.bias"}
    save_file(state, str(tmp_path / "w.safetensors"))
    with pytest.raises(KeyError, match="features.28.bias"):
        VGG16Backbone(weights=str(tmp_path / "w.safetensors"))


def test_weights_with_unexpected_keys_are_rejected(tmp_path):
    state = dict(VGG16Backbone().state_dict(), **{"features.99.weight": torch.zeros(1)})
    save_file(state, str(tmp_path / "w.safetensors"))
    with pytest.raises(KeyError, match="features.99.weight"):
        VGG16Backbone(weights=str(tmp_path / "w.safetensors"))


def test_backbone_weights_holding_nan_are_refused_naming_the_file_and_the_tensor(tmp_path):
    from registry import NonFiniteValuesError

    state = VGG16Backbone().state_dict()
    state["features.10.weight"][0, 0, 1, 1] = float("nan")
    save_file(state, str(tmp_path / "w.safetensors"))
    with pytest.raises(NonFiniteValuesError, match=rf"the backbone weights file {tmp_path / 'w.safetensors'} holds "
                                                   r"NaN or Inf values in 1 tensor\(s\): features.10.weight \(1 of"):
        VGG16Backbone(weights=str(tmp_path / "w.safetensors"))


def test_missing_weights_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        VGG16Backbone(weights=str(tmp_path / "nope.safetensors"))


def test_torch_weight_files_load_without_unpickling_code(tmp_path):
    state = VGG16Backbone().state_dict()
    torch.save({"state_dict": state}, tmp_path / "w.pth")
    bb = VGG16Backbone(weights=str(tmp_path / "w.pth"))
    assert torch.equal(bb.features[0].weight, state["features.0.weight"])


def test_conv5_recipe_freezes_conv1_to_conv4():
    bb = VGG16Backbone(train_layers="conv5")
    assert not bb.features[21].weight.requires_grad and bb.features[24].weight.requires_grad
    with pytest.raises(ValueError, match="train_layers"):
        bb.set_trainable("conv9")


def test_frozen_resnet_batchnorm_stays_in_eval_mode():
    bb = ResNet50Backbone(train_layers="layer3").train()
    assert not bb.layer2[0].bn1.training and bb.layer3[0].bn1.training
