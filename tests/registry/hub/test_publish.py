"""`vpr release publish` against the loopback Hub: push every bundled release, pull it back bit-identical,
record the pin, after which pretrained=True loads the Hub copy."""
from __future__ import annotations

import importlib
import json
import re

import pytest
import torch

import registry

from .helpers import TOKEN, outputs


@pytest.fixture
def publish_module():
    """The release command (`vpr release`), whose `publish` subcommand this tests."""
    return importlib.import_module("registry.cli.release")


@pytest.fixture
def demo_release(tiny, tiny_model_name, tmp_path, monkeypatch):
    """The tiny model bundled as release `<tiny>.demo` in half precision, registered as its only release."""
    model, images = tiny
    folder = model.save_pretrained(tmp_path / "releases" / f"{tiny_model_name}.demo", dtype="float16",
                                   release={"name": f"{tiny_model_name}.demo", "trained_on": "nothing (a test)"})
    entry = registry.models._registry.get_entry(tiny_model_name)
    monkeypatch.setattr(entry, "releases", registry.find_releases(folder.parent, tiny_model_name))
    monkeypatch.setattr(entry, "default_release", "demo")
    return folder, images


def test_publish_round_trip_records_a_pin_that_pretrained_true_then_prefers(
        hub_server, publish_module, demo_release, tiny_model_name, monkeypatch, capsys):
    folder, images = demo_release
    full = f"{tiny_model_name}.demo"
    bundled = registry.create(full, pretrained=True)
    assert bundled.config["source"] == f"bundled:{full}"

    assert publish_module.main(["publish", "--namespace", "tester", "--releases", full, "--token", TOKEN,
                                "--record"]) == 0
    out = capsys.readouterr().out
    pin = re.search(rf"{re.escape(full)} = (tester/\S+@[0-9a-f]{{40}})", out).group(1)
    assert "bit-identical" in out and pin.startswith("tester/hubtest-tiny-netvlad-demo@")

    table = json.loads((folder.parent / "published.json").read_text())
    assert table == {full: pin}
    entry = registry.models._registry.get_entry(tiny_model_name)
    monkeypatch.setattr(entry, "releases", registry.find_releases(folder.parent, tiny_model_name))
    assert entry.release("demo").hub == pin and entry.release("demo").folder == folder
    pulled = registry.create(full, pretrained=True)
    assert pulled.config["source"] == pin
    assert torch.equal(outputs(pulled, images), outputs(bundled, images))
    repo, commit = pin.split("@")
    from safetensors.torch import load, load_file

    stored = load(hub_server.file_bytes(repo, "model.safetensors", commit))
    bundled_file = load_file(str(folder / "model.safetensors"))  # the Hub copy keeps the bundled precision
    assert sorted(stored) == sorted(bundled_file)
    assert all(stored[k].dtype == t.dtype and torch.equal(stored[k], t) for k, t in bundled_file.items())


def test_publish_refuses_an_unknown_release(publish_module, demo_release, capsys):
    from registry.training.release import ReleaseError, publish

    with pytest.raises(ReleaseError, match="no bundled release named"):
        publish("tester", names=["nonexistent_vgg16.demo"], token=TOKEN)
    assert publish_module.main(["publish", "--namespace", "tester", "--releases", "nonexistent_vgg16.demo"]) == 1
    assert "vpr release: error: no bundled release named ['nonexistent_vgg16.demo']" in capsys.readouterr().err
