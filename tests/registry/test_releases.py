"""The bundled releases: pretrained=True loads them offline from the package, everywhere a user asks for them,
reproduces the descriptors recorded from the float32 model, and their cards state what was measured."""
from __future__ import annotations

import json
import re
import socket
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import registry
from registry.datasets import PROBE_IMAGES
from registry.hub._bundle import bundled_weights, is_bundled, piece_path, read_manifest

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "tests" / "release_reference"
RELEASED = ("clusvpr_vgg16", "netvlad_vgg16", "gem_vgg16")
MAX_BYTES = 100_000_000


@pytest.fixture
def no_network(monkeypatch):
    """Offline as a user without network: HF_HUB_OFFLINE and any non-loopback connection refused."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    real = socket.socket.connect

    def guard(sock, address):
        host = address[0] if isinstance(address, tuple) else address
        if host not in ("127.0.0.1", "::1", "localhost"):
            raise AssertionError(f"a test of the bundled releases tried to reach {address}")
        return real(sock, address)

    monkeypatch.setattr(socket.socket, "connect", guard)


def _entry(name):
    return registry.models._registry.get_entry(name)


@pytest.mark.parametrize("name", RELEASED)
def test_every_model_has_a_bundled_nordland_release_inside_the_package(name):
    entry = _entry(name)
    assert entry.default_release == "nordland"
    folder = entry.release().folder
    package = Path(registry.__file__).resolve().parents[1]
    assert folder is not None and package in folder.resolve().parents
    files = {p.name for p in folder.iterdir()}
    assert files >= {"config.json", "README.md"}
    assert "model.safetensors" in files or files >= {"bundle.json", "own.safetensors"}
    assert f"{name}.nordland" in registry.list_models(pretrained=True)


def _pieces(folder):
    """The files a release folder's weights are stored in: its model.safetensors, or its bundle's pieces."""
    if not is_bundled(folder):
        return [folder / "model.safetensors"]
    return [piece_path(folder, piece) for piece in read_manifest(folder)["pieces"]]


def test_shipped_release_weights_lie_inside_the_package_and_bundles_share_the_frozen_layers():
    """Ordinary folders or bundles (vpr release bundle --in-place --shared-out registry/releases/_shared): every
    file a release's weights are read from is inside the installed package; bundled releases hold conv1..conv4,
    frozen in every release recipe, in one shared file."""
    package = Path(registry.__file__).resolve().parents[1]
    holders = {}
    for name in RELEASED:
        folder = _entry(name).release().folder
        for path in _pieces(folder):
            path = path.resolve()
            assert path.is_file() and package in path.parents, f"{folder}'s weights piece {path}"
            holders.setdefault(path, set()).add(name)
    bundled = {name for name in RELEASED if is_bundled(_entry(name).release().folder)}
    if len(bundled) > 1:
        assert any(names == bundled for names in holders.values())


def _weights_header(folder):
    """The complete model.safetensors header of a release folder (rebuilt from its bundle where bundled)."""
    if is_bundled(folder):
        entry = json.loads((folder / "config.json").read_text())["files"]["model.safetensors"]
        raw = bundled_weights(folder, entry["sha256"])
    else:
        raw = (folder / "model.safetensors").read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + length])


@pytest.mark.parametrize("name", RELEASED)
def test_pretrained_true_loads_offline_and_reproduces_the_recorded_descriptors(no_network, name):
    model = registry.create(name, pretrained=True)
    assert model.config["source"] == f"bundled:{name}.nordland"
    assert all(p.dtype == torch.float32 for p in model.parameters())
    reference = np.load(REFERENCE / f"{name}.nordland.npz", allow_pickle=False)
    pre = model.transform()
    with torch.no_grad():
        for key, path in PROBE_IMAGES.items():
            got = model(pre(Image.open(path).convert("RGB")).unsqueeze(0))[0].numpy()
            want = reference[key]
            assert got.shape == want.shape
            # the float32 model's descriptor, through half-precision weights: equal to fp16 rounding
            assert float(got @ want) > 0.9995, key
            np.testing.assert_allclose(got, want, atol=5e-3)


@pytest.mark.parametrize("name", RELEASED)
def test_bare_name_tagged_name_torch_hub_and_timm_load_the_same_release(no_network, name):
    import timm

    import clusvpr_plugin  # noqa: F401  (timm entry points)

    x = torch.randn(2, 3, *registry.create(f"{name}.nordland").input_config["input_size"][1:])
    ref = registry.create(name, pretrained=True)
    with torch.no_grad():
        want = ref(x)
        for model in (registry.create(f"{name}.nordland", pretrained=True),
                      torch.hub.load(str(ROOT), name, source="local", pretrained=True),
                      timm.create_model(name, pretrained=True),
                      timm.create_model(f"{name}.nordland", pretrained=True)):
            assert torch.equal(model(x), want)
    assert timm.create_model(name, pretrained=True).pretrained_cfg["input_size"] == tuple(
        ref.input_config["input_size"])


def test_a_tag_without_pretrained_builds_the_release_architecture_untrained():
    model = registry.create("clusvpr_vgg16.nordland")
    released = registry.create("clusvpr_vgg16", pretrained=True)
    assert model.input_config["input_size"] == released.input_config["input_size"]
    assert set(model.state_dict()) == set(released.state_dict())
    assert "source" not in model.config


def test_an_unknown_tag_lists_the_released_ones():
    with pytest.raises(KeyError, match=r"no release tagged 'pitts'.*clusvpr_vgg16\.nordland"):
        registry.create("clusvpr_vgg16.pitts", pretrained=True)


def test_model_without_a_release_still_says_how_to_get_weights():
    with pytest.raises(registry.NotPublishedError, match="train.*pretrained='org/name"):
        registry.create("gem_resnet50", pretrained=True)


@pytest.mark.parametrize("name", RELEASED)
def test_model_info_says_what_the_release_was_trained_on(name):
    info = registry.model_info(name)
    assert info["default_release"] == f"{name}.nordland"
    assert "Nordland" in info["weights"] and "bundled" in info["weights"]
    assert "Nordland" in info["releases"][f"{name}.nordland"]["trained_on"]


def _release_config(name):
    return json.loads((_entry(name).release().folder / "config.json").read_text())


def test_releases_fit_the_size_budget_and_store_half_precision_weights():
    files = set()  # a shared piece counts once
    for name in RELEASED:
        folder = _entry(name).release().folder
        files |= {p.resolve() for p in folder.iterdir()} | {p.resolve() for p in _pieces(folder)}
        dtypes = {k: e["dtype"] for k, e in _weights_header(folder).items() if k != "__metadata__"}
        assert dtypes["backbone.features.28.weight"] == "F16"  # conv5_3: the bulk of the bytes
        big = {k for k, d in dtypes.items() if d == "F16"}
        assert all(not k.startswith("whitening.") for k in big)  # kept float32: rounding there moves recall
        assert set(dtypes.values()) <= {"F16", "F32", "I64"}
        assert _release_config(name)["weights_dtype"] == "float16"
    total = sum(p.stat().st_size for p in files)
    assert total <= MAX_BYTES, f"releases take {total / 1e6:.1f} MB"


@pytest.mark.parametrize("name", RELEASED)
def test_card_states_the_recorded_recalls_protocol_domain_and_provenance(name):
    config = _release_config(name)
    card = (_entry(name).release().folder / "README.md").read_text()
    recalls = config["recalls"]
    assert set(recalls) == {"nordland_val", "nordland_test", "corridor"}
    for dataset, values in recalls.items():
        row = f"| {dataset} | " + " | ".join(f"{values[k]:.2f}" for k in ("R@1", "R@5", "R@10")) + " |"
        assert row in card
        assert f"**{dataset}**" in card  # its evaluation protocol
    release = config["release"]
    assert release["name"] == f"{name}.nordland" and re.fullmatch(r"[0-9a-f]{40}", release["git_commit"])
    assert f"- Seed: {release['seed']}" in card and release["command"] in card
    assert "64x32" in card and "Not for:" in card and "+-1 place" in card
    assert "25 m" not in card and "Not recorded" not in card and "(street-level imagery)" not in card
    if release.get("whitening_dropped"):
        assert "ships without it, to fit the size budget" in card
    assert f"Backbone initialisation: {config['backbone_weights']}" in card and "random init" not in card
    dim = config["descriptor_dim"]
    assert f"{dim}-d L2-normalised descriptor" in card
    assert registry.create(name, pretrained=True).descriptor_dim == dim
