"""input_norm='imagenet': the model takes ImageNet-normalised RGB and gives the native path's descriptors."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

import registry
from registry.models.input_norm import IMAGENET_MEAN, IMAGENET_STD

SMALL = {"input_size": (64, 96)}
SMALL_ARGS = {"clusvpr_vgg16": {"num_clusters": 8, "whitening_dim": 32}, "netvlad_vgg16": {"num_clusters": 8,
                                                                                             "whitening_dim": 32}}
TOLERANCE = 1e-5


def _rgb(seed: int = 0, size=(64, 96)) -> torch.Tensor:
    """(2, 3, H, W) smooth random RGB in 0..1 (what ToTensor gives)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(2, 3, size[0] // 8, size[1] // 8, generator=g)
    return torch.nn.functional.interpolate(coarse, size=size, mode="bilinear", align_corners=False).clamp(0, 1)


def _normalised(rgb: torch.Tensor, model) -> torch.Tensor:
    """rgb normalised the way the model's input_config says."""
    mean = torch.tensor(model.input_config["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(model.input_config["std"]).view(1, 3, 1, 1)
    return (rgb - mean) / std


def _trained_like(model, seed: int = 0):
    """Random conv biases (a fresh backbone's are zero, which makes a ReLU network blind to the input's scale,
    and so to a wrong normalisation) and a fitted whitening where the model has one."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for conv in model.backbone.modules():
            if isinstance(conv, torch.nn.Conv2d) and conv.bias is not None:
                conv.bias.copy_(0.5 * torch.randn(conv.bias.shape, generator=g))
    if model.whitening is not None:
        g = torch.Generator().manual_seed(seed)
        n = model.whitening.out_dim + 8
        model.fit_whitening(torch.nn.functional.normalize(torch.randn(n, model.whitening.in_dim, generator=g), dim=-1))
    return model


def assert_imagenet_path_matches_native(native, imagenet, rgb: torch.Tensor) -> None:
    """Descriptors of ImageNet-normalised input through `imagenet` equal those of `native` on its own convention."""
    assert imagenet.input_config["mean"] == pytest.approx(IMAGENET_MEAN)
    assert imagenet.input_config["std"] == pytest.approx(IMAGENET_STD)
    x_in = (rgb - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = native(_normalised(rgb, native))
        got = imagenet(x_in)
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() < TOLERANCE


@pytest.mark.parametrize("name", registry.list_models())
def test_imagenet_input_gives_the_native_descriptors_for_every_registered_model(name):
    native = _trained_like(registry.create(name, **SMALL, **SMALL_ARGS.get(name, {})))
    imagenet = registry.create(name, **SMALL, **SMALL_ARGS.get(name, {}), input_norm="imagenet")
    imagenet.load_state_dict(native.state_dict(), strict=True)  # the same weights serve both conventions
    assert imagenet.input_norm == "imagenet" and native.input_norm == "native"
    assert_imagenet_path_matches_native(native, imagenet, _rgb())


@pytest.mark.parametrize("name", registry.list_models(pretrained=True))
def test_released_weights_give_the_native_descriptors_through_imagenet_input(name):
    native = registry.create(name, pretrained=True)
    imagenet = registry.create(name, pretrained=True, input_norm="imagenet")
    assert_imagenet_path_matches_native(native, imagenet, _rgb(seed=1))


@pytest.mark.parametrize("name", ["clusvpr_vgg16", "gem_vgg16"])
def test_transform_of_an_imagenet_model_is_torchvision_imagenet_normalisation(name):
    from torchvision import transforms as T

    model = registry.create(name, **SMALL, input_norm="imagenet")
    img = Image.fromarray((np.random.default_rng(0).random((64, 96, 3)) * 255).astype(np.uint8))
    expected = T.Normalize(IMAGENET_MEAN, IMAGENET_STD)(T.ToTensor()(img))
    assert torch.allclose(model.transform()(img), expected, atol=1e-6)


def test_transform_path_of_both_conventions_gives_the_same_descriptors():
    args = SMALL_ARGS["clusvpr_vgg16"]
    native = _trained_like(registry.create("clusvpr_vgg16", **SMALL, **args))
    imagenet = registry.create("clusvpr_vgg16", **SMALL, **args, input_norm="imagenet")
    imagenet.load_state_dict(native.state_dict())
    img = Image.fromarray((np.random.default_rng(1).random((70, 100, 3)) * 255).astype(np.uint8))
    with torch.no_grad():
        a = native(native.transform()(img).unsqueeze(0))
        b = imagenet(imagenet.transform()(img).unsqueeze(0))
    assert (a - b).abs().max().item() < TOLERANCE


def test_native_models_have_no_conversion_and_weights_do_not_depend_on_the_convention():
    native = registry.create("netvlad_vgg16", **SMALL, **SMALL_ARGS["netvlad_vgg16"])
    imagenet = registry.create("netvlad_vgg16", **SMALL, **SMALL_ARGS["netvlad_vgg16"], input_norm="imagenet")
    assert native.input_conversion is None and imagenet.input_conversion is not None
    assert native.state_dict().keys() == imagenet.state_dict().keys()


def test_an_imagenet_native_backbone_needs_no_conversion():
    model = registry.create("gem_resnet50", **SMALL, input_norm="imagenet")
    assert model.input_conversion is None and model.input_norm == "imagenet"


def test_an_unknown_input_norm_is_a_value_error_naming_the_valid_ones():
    with pytest.raises(ValueError, match="'native', 'imagenet'"):
        registry.create("gem_vgg16", **SMALL, input_norm="caffe")


def test_config_json_records_imagenet_input_and_loading_keeps_it(tmp_path):
    model = _trained_like(registry.create("netvlad_vgg16", **SMALL, num_clusters=8, whitening_dim=32,
                                           input_norm="imagenet"))
    model.save_pretrained(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["input_norm"] == "imagenet" and config["model_args"]["input_norm"] == "imagenet"
    assert config["pretrained_cfg"]["mean"] == pytest.approx(IMAGENET_MEAN)
    assert config["input_config"]["std"] == pytest.approx(IMAGENET_STD)
    loaded = registry.VPRModel.from_pretrained(tmp_path / "m")
    assert loaded.input_norm == "imagenet" and loaded.input_config["mean"] == pytest.approx(IMAGENET_MEAN)
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_any_saved_model_loads_with_imagenet_input_and_gives_its_descriptors(tmp_path):
    native = _trained_like(registry.create("clusvpr_vgg16", **SMALL, num_clusters=8, whitening_dim=32))
    native.save_pretrained(tmp_path / "m")
    imagenet = registry.VPRModel.from_pretrained(tmp_path / "m", input_norm="imagenet")
    assert_imagenet_path_matches_native(registry.VPRModel.from_pretrained(tmp_path / "m"), imagenet, _rgb(seed=2))
