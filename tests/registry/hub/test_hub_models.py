"""Every registered model survives push and pull bit for bit; timm and torch.hub load through the same code."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import registry
import registry.hub as hub

from .helpers import TOKEN, initialise, outputs

ROOT = Path(__file__).resolve().parents[3]
SMALL = {  # registry overrides that keep each architecture but make a test fast
    "clusvpr_vgg16": {"num_clusters": 4, "whitening_dim": 16, "input_size": (64, 64)},
    "netvlad_vgg16": {"num_clusters": 4, "whitening_dim": 16, "input_size": (64, 64)},
    "gem_vgg16": {"input_size": (64, 64)},
    "gem_resnet50": {"input_size": (64, 64)},
}


def small(name: str, seed: int = 0):
    """A small, fitted instance of a registered model and a batch for it."""
    torch.manual_seed(seed)
    return initialise(registry.create(name, **SMALL[name]), seed=seed), torch.randn(2, 3, 64, 64)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_push_then_pull_is_bit_identical_for_every_model(hub_server, name):
    model, images = small(name)
    commit = model.push_to_hub(f"tester/{name}", token=TOKEN)
    loaded = registry.create(name, pretrained=f"tester/{name}@{commit}")
    assert loaded.config["architecture"] == name
    assert torch.equal(outputs(model, images), outputs(loaded, images))


def _pin_default(monkeypatch, name: str, repo: str, commit: str) -> None:
    """Record a published pin for `name`'s default release (as benchmarks/publish.py --record does): it takes
    precedence over the bundled copy."""
    entry = registry.models._registry.get_entry(name)
    tag = entry.default_release or "nordland"
    bundled = entry.releases[tag].folder if tag in entry.releases else None
    monkeypatch.setattr(entry, "releases", {**entry.releases,
                                            tag: registry.Release(tag, bundled, f"{repo}@{commit}")})
    monkeypatch.setattr(entry, "default_release", tag)


def test_timm_hf_hub_loads_a_repo_this_project_pushed(hub_server):
    import timm

    model, images = small("clusvpr_vgg16")
    commit = model.push_to_hub("tester/clusvpr", token=TOKEN)
    for name in ("hf-hub:tester/clusvpr", f"hf-hub:tester/clusvpr@{commit}"):
        loaded = timm.create_model(name, pretrained=True)
        assert loaded.pretrained_cfg["input_size"] == (3, 64, 64)
        assert torch.equal(outputs(model, images), outputs(loaded, images))


def test_timm_pretrained_resolves_the_pinned_default_repo(hub_server, monkeypatch):
    import timm

    model, images = small("netvlad_vgg16")
    pinned = model.push_to_hub("tester/netvlad", token=TOKEN)
    expected = outputs(model, images)
    with torch.no_grad():
        model.aggregator.centroids.add_(1.0)
    model.push_to_hub("tester/netvlad", token=TOKEN)  # main moves on; the pinned default must not
    _pin_default(monkeypatch, "netvlad_vgg16", "tester/netvlad", pinned)
    assert torch.equal(outputs(timm.create_model("netvlad_vgg16", pretrained=True), images), expected)


def test_timm_pretrained_without_released_weights_says_so(hub_server):
    import timm

    import clusvpr_plugin  # noqa: F401  (registers the timm entry points)

    with pytest.raises(registry.NotPublishedError, match="released"):
        timm.create_model("gem_resnet50", pretrained=True)
    assert hub_server.count() == 0


def test_pretrained_true_prefers_a_recorded_pin_over_the_bundled_release(hub_server, monkeypatch):
    model, images = small("gem_vgg16", seed=3)
    commit = model.push_to_hub("tester/gem-release", token=TOKEN)
    _pin_default(monkeypatch, "gem_vgg16", "tester/gem-release", commit)
    loaded = registry.create("gem_vgg16", pretrained=True)
    assert loaded.config["source"] == f"tester/gem-release@{commit}"
    assert torch.equal(outputs(loaded, images), outputs(model, images))


def test_torch_hub_pretrained_pulls_through_the_same_code(hub_server, monkeypatch):
    model, images = small("gem_vgg16")
    commit = model.push_to_hub("tester/gem", token=TOKEN)
    expected = outputs(model, images)
    by_repo = torch.hub.load(str(ROOT), "gem_vgg16", source="local", pretrained=f"tester/gem@{commit}")
    assert torch.equal(outputs(by_repo, images), expected)
    _pin_default(monkeypatch, "gem_vgg16", "tester/gem", commit)
    by_default = torch.hub.load(str(ROOT), "gem_vgg16", source="local", pretrained=True)
    assert torch.equal(outputs(by_default, images), expected)


def test_torch_hub_pretrained_without_released_weights_says_so(hub_server):
    with pytest.raises(registry.NotPublishedError, match="released"):
        torch.hub.load(str(ROOT), "gem_resnet50", source="local", pretrained=True)
    assert hub_server.count() == 0


def test_timm_refuses_a_config_that_names_weights_to_load(tmp_path):
    import json

    import timm

    import clusvpr_plugin  # noqa: F401  (registers the timm entry points)

    model, _ = small("gem_vgg16")
    folder = model.save_pretrained(tmp_path / "gem")
    assert timm.create_model(f"local-dir:{folder}").input_config["input_size"] == (3, 64, 64)  # its model_args
    config = json.loads((folder / "config.json").read_text())
    config["model_args"]["backbone_weights"] = "imagenet"  # would download, or read any local file
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(hub.WrongModelError, match=r"sets model_args \['backbone_weights'\], which are not "
                                                  "architecture arguments"):
        timm.create_model(f"local-dir:{folder}")


def test_timm_refuses_a_config_argument_outside_its_range_naming_the_config(tmp_path):
    import json

    import timm

    model, _ = small("gem_vgg16")
    folder = model.save_pretrained(tmp_path / "gem")
    config = json.loads((folder / "config.json").read_text())
    config["model_args"]["input_size"] = [-5, 64]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(hub.WrongModelError, match=r"config.json \(read by timm\) of gem_vgg16, model_args: input_size "
                                                  r"= \[-5, 64\] is outside its documented range: it must be 2 "
                                                  r"integers in 16\.\.8192"):
        timm.create_model(f"local-dir:{folder}")


def test_a_pushed_imagenet_input_model_pulls_back_with_imagenet_input(hub_server):
    import timm

    torch.manual_seed(0)
    model = initialise(registry.create("clusvpr_vgg16", **SMALL["clusvpr_vgg16"], input_norm="imagenet"))
    images = torch.randn(2, 3, 64, 64)
    commit = model.push_to_hub("tester/clusvpr-imagenet", token=TOKEN)
    for loaded in (registry.create("clusvpr_vgg16", pretrained=f"tester/clusvpr-imagenet@{commit}"),
                   timm.create_model(f"hf-hub:tester/clusvpr-imagenet@{commit}", pretrained=True)):
        assert loaded.input_norm == "imagenet"
        assert loaded.input_config["mean"] == pytest.approx((0.485, 0.456, 0.406))
        assert torch.equal(outputs(model, images), outputs(loaded, images))
    assert timm.create_model("hf-hub:tester/clusvpr-imagenet", pretrained=True).pretrained_cfg["std"] == \
        pytest.approx((0.229, 0.224, 0.225))


def test_torch_hub_and_timm_pick_the_descriptor_size_of_a_pushed_model(hub_server):
    import timm

    model, images = small("netvlad_vgg16")  # a fitted 16-d whitening
    commit = model.push_to_hub("tester/netvlad-dims", token=TOKEN)
    src = f"tester/netvlad-dims@{commit}"
    by_hub = torch.hub.load(str(ROOT), "netvlad_vgg16", source="local", pretrained=src, descriptor_dim=8)
    by_timm = timm.create_model(f"hf-hub:{src}", pretrained=True, descriptor_dim=8)
    for loaded in (by_hub, by_timm):
        assert loaded.descriptor_dim == loaded.num_features == 8
        assert outputs(loaded, images).shape == (2, 8)
    assert torch.equal(outputs(by_hub, images), outputs(by_timm, images))
