"""registry.whitening.apply: descriptors whitened as the model's forward whitens them."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

import registry
from registry.whitening import whiten, whiten_tensor


def test_whitened_descriptors_are_the_models_own():
    model = registry.create("netvlad_vgg16", input_size=(64, 96), num_clusters=4, whitening_dim=16)
    images = torch.randn(3, 3, 64, 96)
    with torch.no_grad():
        raw = model.aggregator(model.local_features(images))
    model.fit_whitening(F.normalize(torch.randn(40, model.aggregator.out_dim), dim=-1))
    with torch.no_grad():
        expected = model(images).numpy()
        tensor = whiten_tensor(model.whitening, raw)
    got = whiten(model.whitening, raw.numpy())
    assert got.shape == (3, 16) and np.array_equal(got, tensor.numpy())
    np.testing.assert_allclose(got, expected, atol=1e-6)
    # against float64: (x - mu) U diag(lams^-1/2), normalised twice (the layer, then the model) = normalised once
    w = model.whitening
    y = ((raw.double() - w.mu.double()) @ w.U.double()) * w.lams.double().rsqrt()
    np.testing.assert_allclose(got, F.normalize(y, dim=-1).numpy(), atol=1e-5)
