"""Cluster initialisation (spec section 4): assignment-space descriptors, faiss k-means, centroids.h5, alpha."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import registry
from registry._util import h5io
from registry.training import init_clusters, kmeans, load_clusters, sample_local_descriptors
from registry.training.sources import ImageSource, stack_items


def _source(model, dataset):
    return ImageSource(dataset.db_images, model.input_config)


@pytest.mark.parametrize("name, dim", [("tiny_netvlad", 32), ("tiny_clusvpr", 8)])
def test_descriptors_are_sampled_where_the_assignment_looks(tiny_sets, name, dim):
    model = registry.create(name)
    source = _source(model, tiny_sets[0])
    descs = sample_local_descriptors(model, source, [0, 1], per_image=5, rng=np.random.default_rng(0))
    assert descs.shape == (10, dim)
    with torch.no_grad():
        local = model.aggregator.local_descriptors(model.backbone(stack_items(source, [0], train=False)))
    rows = local.flatten(2).transpose(1, 2)[0] if local.ndim == 4 else local
    # every sampled vector of image 0 is one of that image's local descriptors
    nearest = torch.cdist(descs[:5], rows, compute_mode="donot_use_mm_for_euclid_dist").min(dim=1).values
    assert nearest.max() < 1e-5


def test_kmeans_finds_separated_clusters():
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0], [10, 0], [0, 10]], dtype=np.float32)
    blobs = [c + 0.1 * rng.standard_normal((50, 2)) for c in centres]
    points = torch.from_numpy(np.concatenate(blobs).astype(np.float32))
    found = kmeans(points, 3, seed=0).numpy()
    assert np.abs(np.sort(found, axis=0) - np.sort(centres, axis=0)).max() < 0.1


def test_init_clusters_writes_centroids_h5_and_sets_alpha(tiny_sets, tmp_path):
    model = registry.create("tiny_clusvpr")
    path = tmp_path / "centroids.h5"
    alpha = init_clusters(model, _source(model, tiny_sets[0]), path, num_descriptors=300, per_image=30, seed=0)
    centroids, descriptors = h5io.load_centroids(path)
    assert centroids.shape == (4, 8) and descriptors.shape == (300, 8)
    c_hat = F.normalize(centroids, dim=1)
    top2 = (descriptors @ c_hat.T).topk(2, dim=1).values
    assert alpha == pytest.approx(-math.log(0.01) / (top2[:, 0] - top2[:, 1]).mean().item(), rel=1e-5)
    agg = model.aggregator.optlad
    torch.testing.assert_close(agg.centroids.detach(), centroids)
    torch.testing.assert_close(agg.conv.weight.detach().view(4, 8), alpha * c_hat, rtol=1e-5, atol=1e-6)
    assert model.aggregator.cluster_source is not None


def test_models_without_clusters_skip_and_wrong_centres_are_rejected(tiny_sets, tmp_path):
    gem = registry.create("tiny_gem")
    assert init_clusters(gem, _source(gem, tiny_sets[0]), tmp_path / "c.h5") is None
    h5io.save_centroids(tmp_path / "wrong.h5", torch.randn(6, 8), torch.randn(20, 8))
    with pytest.raises(ValueError, match="cluster again"):
        load_clusters(registry.create("tiny_clusvpr"), tmp_path / "wrong.h5")
