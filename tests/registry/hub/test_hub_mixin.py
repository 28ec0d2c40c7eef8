"""VPRModel as a huggingface_hub ModelHubMixin: the mixin's hooks read and write the zoo's layout, and
from_pretrained returns an instance of the class it is called on."""
from __future__ import annotations

import functools

import pytest
import torch

import registry
import registry.hub as hub
from registry.models.factory import build_vpr_model

from .helpers import outputs


class TinySubclass(registry.VPRModel):
    """A VPRModel subclass that a registered builder makes."""


class Unbuilt(registry.VPRModel):
    """A VPRModel subclass that no registered builder makes."""


@functools.wraps(build_vpr_model)
def _build_subclass(**kwargs):
    model = build_vpr_model(**kwargs)
    return TinySubclass(model.backbone, model.aggregator, model.whitening, model.input_config, model.config,
                        model.input_conversion)


def test_vpr_model_is_a_model_hub_mixin_of_this_library():
    from huggingface_hub import ModelHubMixin

    assert issubclass(registry.VPRModel, ModelHubMixin)
    data = registry.VPRModel._hub_mixin_info.model_card_data
    assert (data.library_name, data.pipeline_tag) == ("clusvpr-zoo", "image-feature-extraction")


def test_the_mixin_hooks_write_and_read_the_zoo_layout(tiny, tmp_path):
    model, images = tiny
    model._save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "README.md", "centroids.h5", "config.json", "model.safetensors", "pca.h5"]
    loaded = registry.VPRModel._from_pretrained(model_id=str(tmp_path / "m"), revision=None, cache_dir=None,
                                                force_download=False, local_files_only=False, token=None)
    assert torch.equal(outputs(loaded, images), outputs(model, images))


def test_from_pretrained_returns_an_instance_of_the_class_it_is_called_on(tiny, tmp_path, monkeypatch):
    from registry.models import _registry

    model, images = tiny
    entry = _registry.get_entry(model.name)
    monkeypatch.setattr(entry, "builder", _build_subclass)
    folder = model.save_pretrained(tmp_path / "m")
    for cls in (TinySubclass, registry.VPRModel):
        loaded = cls.from_pretrained(folder)
        assert type(loaded) is TinySubclass
        assert torch.equal(outputs(loaded, images), outputs(model, images))
    assert type(registry.create(model.name, pretrained=str(folder))) is TinySubclass


def test_from_pretrained_on_a_class_the_config_does_not_build_is_refused_before_reading_weights(tiny, tmp_path):
    model, _ = tiny
    folder = model.save_pretrained(tmp_path / "m")
    (folder / "model.safetensors").unlink()  # the class is checked first: no weights are read
    with pytest.raises(hub.WrongModelError, match="'hubtest_tiny_netvlad' model, which its registered builder "
                                                  "makes as a VPRModel, not a Unbuilt"):
        Unbuilt.from_pretrained(folder)


def _digests(folder):
    import hashlib

    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_load_then_save_keeps_every_file_of_the_layout(tiny, tmp_path):
    model, _ = tiny
    first = model.save_pretrained(tmp_path / "first")
    again = registry.VPRModel.from_pretrained(first).save_pretrained(tmp_path / "again")
    assert sorted(_digests(first)) == ["README.md", "centroids.h5", "config.json", "model.safetensors", "pca.h5"]
    assert _digests(again) == _digests(first)
    created = registry.create(model.name, pretrained=str(first)).save_pretrained(tmp_path / "created")
    assert _digests(created) == _digests(first)


@pytest.mark.parametrize("name", ["netvlad_vgg16.nordland", "clusvpr_vgg16.nordland"])
def test_a_released_model_saved_again_keeps_its_centroids_file(name, tmp_path):
    from registry.models import _registry

    base, tag = _registry.split_tag(name)
    folder = _registry.get_entry(base).release(tag).folder
    saved = registry.create(name, pretrained=True).save_pretrained(tmp_path / "again", dtype="float16")
    assert (saved / "centroids.h5").read_bytes() == (folder / "centroids.h5").read_bytes()


def test_create_resolves_the_name_once_and_builds_once(tiny, tmp_path, monkeypatch):
    from registry.models import _registry

    model, images = tiny
    folder = model.save_pretrained(tmp_path / "m")
    entry = _registry.get_entry(model.name)
    monkeypatch.setattr(entry, "releases", {"demo": registry.Release("demo", folder)})
    calls = {"resolve": 0, "build": 0}
    resolve, builder = _registry.resolve_name, entry.builder

    def counting_resolve(name):
        calls["resolve"] += 1
        return resolve(name)

    @functools.wraps(builder)
    def counting_builder(**kwargs):
        calls["build"] += 1
        return builder(**kwargs)

    monkeypatch.setattr(_registry, "resolve_name", counting_resolve)
    monkeypatch.setattr(entry, "builder", counting_builder)
    for pretrained, name, source in ((str(folder), model.name, str(folder)),
                                     (True, f"{model.name}.demo", f"bundled:{model.name}.demo")):
        calls.update(resolve=0, build=0)
        loaded = registry.create(name, pretrained=pretrained)
        assert calls == {"resolve": 1, "build": 1}
        assert loaded.config["source"] == source
        assert torch.equal(outputs(loaded, images), outputs(model, images))
