"""NetVLAD and GeM against naive float64 references."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from registry.models.aggregators import GeM, NetVLAD, alpha_from_clusters


def naive_netvlad(x, conv_w, centroids):
    """Residual tensor materialised, float64."""
    x = F.normalize(x.double(), dim=1).flatten(2)  # N, D, L
    a = torch.softmax(torch.einsum("kd,ndl->nkl", conv_w.double(), x), dim=1)
    resid = x.unsqueeze(1) - centroids.double()[None, :, :, None]  # N, K, D, L
    v = (resid * a.unsqueeze(2)).sum(-1)
    return F.normalize(F.normalize(v, dim=2).flatten(1), dim=1)


def test_netvlad_matches_the_naive_residual_form():
    agg = NetVLAD(16, num_clusters=5).double()
    x = torch.randn(2, 16, 3, 5, dtype=torch.float64)
    expected = naive_netvlad(x, agg.conv.weight[:, :, 0, 0], agg.centroids)
    assert torch.allclose(agg(x), expected, atol=1e-12)


def test_alpha_initialisation_matches_numpy():
    rng = np.random.default_rng(0)
    c, d = rng.normal(size=(6, 8)), rng.normal(size=(50, 8))
    c_hat = c / np.linalg.norm(c, axis=1, keepdims=True)
    dots = np.sort(d @ c_hat.T, axis=1)[:, ::-1]
    expected = -math.log(0.01) / np.mean(dots[:, 0] - dots[:, 1])
    alpha, _ = alpha_from_clusters(torch.tensor(c), torch.tensor(d))
    assert alpha == pytest.approx(expected, rel=1e-5)


def test_netvlad_init_sets_centres_assignment_and_keeps_the_source():
    agg = NetVLAD(8, num_clusters=4)
    c, d = torch.randn(4, 8), torch.randn(30, 8)
    alpha = agg.init_from_clusters(c, d)
    assert torch.equal(agg.centroids.data, c)
    assert torch.allclose(agg.conv.weight[:, :, 0, 0], alpha * F.normalize(c, dim=1))
    assert torch.equal(agg.cluster_source[1], d)
    with pytest.raises(ValueError, match="centroids of shape"):
        agg.init_from_clusters(torch.randn(3, 8), d)


def test_gem_matches_its_formula():
    agg = GeM(4, p=2.5)
    x = torch.randn(2, 4, 3, 3)
    expected = x.clamp(min=1e-6).pow(2.5).mean((2, 3)).pow(1 / 2.5)
    assert torch.allclose(agg(x), F.normalize(expected, dim=1), atol=1e-6)
    assert agg.p.requires_grad


@pytest.mark.parametrize("bad,msg", [(torch.randn(4, 3, 3), "4-D"), (torch.randn(1, 5, 3, 3), "channels"),
                                     (torch.ones(1, 4, 3, 3, dtype=torch.int64), "floating")])
def test_aggregators_reject_bad_maps(bad, msg):
    with pytest.raises(ValueError, match=msg):
        NetVLAD(4, 2)(bad)
