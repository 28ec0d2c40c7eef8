"""Cluster centres (centroids.h5) and whitening (pca.h5) files: NaN or Inf values are refused, naming the file and
the dataset, even when config.json's sha256 matches the damaged file."""
from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import registry
import registry.hub as hub
from registry._util import h5io
from registry._util.files import sha256_file


@pytest.fixture(scope="module")
def saved_with_centres_and_whitening(tmp_path_factory) -> Path:
    """A NetVLAD with k-means centres and a fitted 16-d whitening, saved with save_pretrained."""
    torch.manual_seed(0)
    model = registry.create("netvlad_vgg16", input_size=(64, 96), num_clusters=8, whitening_dim=16)
    model.aggregator.init_from_clusters(torch.randn(8, 512), torch.randn(40, 512))
    model.fit_whitening(torch.nn.functional.normalize(torch.randn(24, 8 * 512), dim=-1))
    folder = tmp_path_factory.mktemp("saved") / "model"
    model.save_pretrained(folder)
    return folder


def _poisoned_copy(saved: Path, target: Path, name: str, key: str, value: float) -> Path:
    """The layout with one value of dataset `key` in file `name` set to `value`, config.json's sha256 updated."""
    target.mkdir()
    for path in saved.iterdir():
        if path.name not in (name, "config.json"):
            os.link(path, target / path.name)
    with h5py.File(saved / name, "r") as src, h5py.File(target / name, "w") as dst:
        for k in src:
            data = np.array(src[k][...])
            if k == key:
                data.flat[data.size // 2] = value
            dst.create_dataset(k, data=data)
    config = json.loads((saved / "config.json").read_text())
    config["files"][name] = {"sha256": sha256_file(target / name), "size": (target / name).stat().st_size}
    (target / "config.json").write_text(json.dumps(config))
    return target


@pytest.mark.parametrize("key", ["centroids", "descriptors"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_centres_with_a_matching_sha256_are_refused_naming_the_file_and_dataset(
        saved_with_centres_and_whitening, tmp_path, key, value):
    folder = _poisoned_copy(saved_with_centres_and_whitening, tmp_path / "m", "centroids.h5", key, value)
    with pytest.raises(registry.NonFiniteValuesError,
                       match=rf"{folder / 'centroids.h5'} holds NaN or Inf values in its '{key}' dataset \(1 of"):
        hub.pull_centroids(folder)


@pytest.mark.parametrize("key", ["U", "lams", "mu"])
def test_non_finite_whitening_with_a_matching_sha256_is_refused_naming_the_file_and_dataset(
        saved_with_centres_and_whitening, tmp_path, key):
    folder = _poisoned_copy(saved_with_centres_and_whitening, tmp_path / "m", "pca.h5", key, float("nan"))
    with pytest.raises(registry.NonFiniteValuesError,
                       match=rf"{folder / 'pca.h5'} holds NaN or Inf values in its '{key}' dataset \(1 of"):
        hub.pull_pca(folder)


def test_a_non_finite_centres_file_outside_a_layout_is_refused_too(tmp_path):
    centroids = np.ones((4, 8), np.float32)
    centroids[2, 5] = -np.inf
    h5io.write_datasets(tmp_path / "c.h5", centroids=centroids, descriptors=np.ones((10, 8), np.float32))
    with pytest.raises(registry.NonFiniteValuesError, match=r"'centroids' dataset \(1 of 32 values\)"):
        h5io.load_centroids(tmp_path / "c.h5")


def test_finite_centres_and_whitening_still_load_with_their_values(saved_with_centres_and_whitening):
    centroids, descriptors = hub.pull_centroids(saved_with_centres_and_whitening)
    with h5py.File(saved_with_centres_and_whitening / "centroids.h5", "r") as f:
        assert np.array_equal(centroids.numpy(), f["centroids"][...])
        assert np.array_equal(descriptors.numpy(), f["descriptors"][...])
    assert hub.pull_pca(saved_with_centres_and_whitening).fitted


def test_a_centres_file_lacking_a_dataset_with_a_matching_sha256_is_a_value_error_naming_the_file(
        saved_with_centres_and_whitening, tmp_path):
    """Before: a bare KeyError (the trust sweep's raw case); now MissingDatasetError, a ValueError (and still a
    KeyError), naming the file, what it has and the fix."""
    folder = _poisoned_copy(saved_with_centres_and_whitening, tmp_path / "m", "centroids.h5", "centroids", 0.0)
    with h5py.File(folder / "centroids.h5", "a") as fh:
        del fh["descriptors"]
    config = json.loads((folder / "config.json").read_text())
    config["files"]["centroids.h5"]["sha256"] = sha256_file(folder / "centroids.h5")
    config["files"]["centroids.h5"]["size"] = (folder / "centroids.h5").stat().st_size
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=rf"{folder / 'centroids.h5'} lacks the datasets \['descriptors'\] \(has "
                                         r"\['centroids'\]\).*restore a good copy") as caught:
        hub.pull_centroids(folder)
    assert isinstance(caught.value, KeyError) and type(caught.value).__module__ == "registry._util.h5io"
