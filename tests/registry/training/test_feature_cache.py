"""Cached frozen-layer features: equal to running the backbone on the images, reused, invalidated on change."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import registry
from registry.training import DistContext, cached_source, feature_cache, frozen_cut
from registry.training.sources import ImageSource, stack_items


def _must_not_run(*args, **kwargs):
    raise AssertionError("the cache should have been read, not recomputed")


def test_cached_features_give_the_backbones_output(tiny_sets, tmp_path):
    train, _ = tiny_sets
    model = registry.create("tiny_netvlad")
    paths = train.db_images[:5]
    cached = cached_source(model, paths, tmp_path, DistContext())
    assert frozen_cut(model.backbone) == 6  # the last conv trains, like VGG16's conv5
    images = stack_items(ImageSource(paths, model.input_config), list(range(5)), train=False)
    inputs = stack_items(cached, list(range(5)), train=False)
    with torch.no_grad():
        torch.testing.assert_close(cached.features(model, inputs), model.backbone(images), rtol=1e-5, atol=1e-5)


def test_the_cache_file_is_reused_and_rebuilt_when_frozen_weights_change(tiny_sets, tmp_path, monkeypatch):
    train, _ = tiny_sets
    model = registry.create("tiny_netvlad")
    paths = train.db_images[:4]
    first = cached_source(model, paths, tmp_path, DistContext())
    assert len(list(tmp_path.glob("features-*.npy"))) == 1

    with monkeypatch.context() as m:
        m.setattr(feature_cache, "encode_prefix", _must_not_run)
        again = cached_source(model, paths, tmp_path, DistContext())
    torch.testing.assert_close(again.cache, first.cache)
    with torch.no_grad():
        model.backbone.features[0].weight.mul_(2.0)
    changed = cached_source(model, paths, tmp_path, DistContext())
    assert len(list(tmp_path.glob("features-*.npy"))) == 2
    assert not torch.allclose(changed.cache, first.cache)


def test_caching_needs_frozen_layers(tiny_sets, tmp_path):
    model = registry.create("tiny_netvlad", train_layers="all")
    with pytest.raises(ValueError, match="no frozen layers to cache.*--cache-features"):
        cached_source(model, tiny_sets[0].db_images[:2], tmp_path, DistContext())


def test_a_copied_dataset_reuses_the_cache_and_an_edited_image_rebuilds_it(tiny_sets, tmp_path, monkeypatch):
    import os
    import shutil

    train, _ = tiny_sets
    model = registry.create("tiny_netvlad")
    cache = tmp_path / "cache"
    first = cached_source(model, train.db_images[:4], cache, DistContext())
    copies = []
    for i, p in enumerate(train.db_images[:4]):  # new folder, new mtimes, same bytes
        copies.append(tmp_path / "copy" / f"{i}{os.path.splitext(str(p))[1]}")
        copies[-1].parent.mkdir(exist_ok=True)
        shutil.copyfile(p, copies[-1])
        os.utime(copies[-1], (1, 1))

    with monkeypatch.context() as m:
        m.setattr(feature_cache, "encode_prefix", _must_not_run)
        again = cached_source(model, copies, cache, DistContext())
    torch.testing.assert_close(again.cache, first.cache)
    shutil.copyfile(train.db_images[5], copies[2])  # other content at one position
    rebuilt = cached_source(model, copies, cache, DistContext())
    assert len(list(cache.glob("features-*.npy"))) == 2
    assert not torch.allclose(rebuilt.cache[2], first.cache[2]) and torch.equal(rebuilt.cache[0], first.cache[0])


def test_an_imagenet_input_model_caches_and_trains_on_its_native_features(tiny_sets, tmp_path):
    train, _ = tiny_sets
    native = registry.create("tiny_netvlad")
    imagenet = registry.create("tiny_netvlad", input_norm="imagenet")
    imagenet.load_state_dict(native.state_dict())
    paths = train.db_images[:4]
    cached = [cached_source(m, paths, tmp_path / m.input_norm, DistContext()).cache for m in (native, imagenet)]
    torch.testing.assert_close(cached[1], cached[0], rtol=1e-4, atol=1e-4)
    sources = [ImageSource(paths, m.input_config) for m in (native, imagenet)]
    with torch.no_grad():
        features = [s.features(m, stack_items(s, list(range(4)), train=False))
                    for s, m in zip(sources, (native, imagenet))]
    torch.testing.assert_close(features[1], features[0], rtol=1e-4, atol=1e-4)


def test_a_feature_cache_holding_nan_is_refused_naming_the_file(tiny_sets, tmp_path):
    train, _ = tiny_sets
    model = registry.create("tiny_netvlad")
    paths = train.db_images[:4]
    cached_source(model, paths, tmp_path, DistContext())
    (cache,) = tmp_path.glob("features-*.npy")
    feats = np.load(cache)
    feats.flat[7] = np.nan
    np.save(cache, feats)
    with pytest.raises(registry.NonFiniteValuesError, match=rf"the feature cache {cache} holds NaN or Inf values "
                                                            r"\(1 of .*delete it and the next run computes it again"):
        cached_source(model, paths, tmp_path, DistContext())
