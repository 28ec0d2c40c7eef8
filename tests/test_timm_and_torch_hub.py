"""timm.create_model and torch.hub entry points build the registry's models."""
import json
import os
import subprocess
import sys

import pytest
import timm
import torch
import torch.hub
from shared_paths import REPO

import clusvpr_plugin  # noqa: F401  (registers the timm entry points)
import registry
from registry import VPRModel

MODELS = ["clusvpr_vgg16", "netvlad_vgg16", "gem_vgg16", "gem_resnet50"]


@pytest.mark.parametrize("name", MODELS)
def test_timm_create_model_builds_the_registry_model(name):
    model = timm.create_model(name, input_size=(64, 64))
    assert isinstance(model, VPRModel) and model.name == name
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, model.num_features)


def test_timm_pretrained_cfg_carries_the_release_input_config():
    cfg = timm.models.get_pretrained_cfg("clusvpr_vgg16")  # the default tag: the bundled Nordland release
    assert cfg.input_size == (3, 96, 192) == tuple(registry.create("clusvpr_vgg16", pretrained=True)
                                                   .input_config["input_size"])
    assert cfg.mean == pytest.approx((0.485, 0.458, 0.408)) and cfg.std == pytest.approx((1 / 255,) * 3)
    assert registry.model_info("clusvpr_vgg16")["input_size"] == (3, 480, 640)  # the architecture's own default
    model = timm.create_model("clusvpr_vgg16", input_size=(64, 64))
    assert model.pretrained_cfg["input_size"] == (3, 64, 64)
    assert model.feature_info[0]["num_chs"] == 512 and model.feature_info[0]["reduction"] == 16


def test_timm_rejects_classification_heads():
    with pytest.raises(ValueError, match="num_classes"):
        timm.create_model("gem_vgg16", num_classes=10)


@pytest.mark.parametrize("kwargs, fix", [
    ({"features_only": True}, "model.local_features"),
    ({"num_classes": 3}, "no classifier head"),
    ({"num_classes": 1000}, "no classifier head"),
    ({"in_chans": 1}, "RGB"),
    ({"drop_rate": 0.2}, "dropout is fixed"),
    ({"drop_path_rate": 0.1}, "no stochastic depth"),
    ({"pretrained_cfg_overlay": {"file": "w.pth"}}, "pretrained='org/name@revision'"),
])
def test_timm_refuses_arguments_it_cannot_honour_instead_of_dropping_them(kwargs, fix):
    (key, value), = kwargs.items()
    with pytest.raises(ValueError, match=rf"{key}=.* is not supported: .*{fix}"):
        timm.create_model("gem_vgg16", input_size=(64, 64), **kwargs)


def test_timm_accepts_its_arguments_at_the_values_a_descriptor_model_honours():
    model = timm.create_model("gem_vgg16", input_size=(64, 64), num_classes=0, in_chans=3, features_only=False,
                              drop_rate=0.0, drop_path_rate=0.0)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, model.num_features)


def test_torch_hub_load_from_a_local_checkout():
    model = torch.hub.load(str(REPO), "clusvpr_vgg16", source="local", input_size=(64, 64))
    assert isinstance(model, VPRModel) and model.descriptor_dim == 8192


def test_torch_hub_and_timm_list_every_registered_model_and_only_those():
    # torch.hub.list reads GitHub; this applies its rule (public callables of hubconf) to the local file, in a fresh
    # process (other tests register models of their own)
    code = ("import json, torch.hub, timm, registry, registry.models.timm_models\n"
            f"module = torch.hub._import_module('hubconf', {str(REPO / 'hubconf.py')!r})\n"
            "public = sorted(f for f in dir(module) if callable(getattr(module, f)) and not f.startswith('_'))\n"
            "print(json.dumps([public, registry.list_models(), sorted(set(registry.list_models()) - "
            "set(timm.list_models()))]))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr
    public, registered, not_in_timm = json.loads(out.stdout.splitlines()[-1])
    assert public == registered == sorted(MODELS) and not_in_timm == []


def test_timm_pretrained_cfg_follows_imagenet_input():
    model = timm.create_model("clusvpr_vgg16", input_size=(64, 64), input_norm="imagenet")
    assert model.input_norm == "imagenet"
    assert model.pretrained_cfg["mean"] == pytest.approx((0.485, 0.456, 0.406))
    assert model.pretrained_cfg["std"] == pytest.approx((0.229, 0.224, 0.225))
    data_cfg = timm.data.resolve_data_config({}, model=model)  # what timm users build their transform from
    assert data_cfg["mean"] == pytest.approx((0.485, 0.456, 0.406)) and data_cfg["input_size"] == (3, 64, 64)


def test_torch_hub_load_takes_imagenet_input():
    model = torch.hub.load(str(REPO), "netvlad_vgg16", source="local", input_size=(64, 64), input_norm="imagenet")
    assert model.input_norm == "imagenet" and model.input_config["std"] == pytest.approx((0.229, 0.224, 0.225))
