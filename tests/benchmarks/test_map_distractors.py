"""The map benchmark's distractors drawn in the whitened space (bench_map_scale.ProjectedDistractors) are the
full-space construction's, exactly: the same numbers from the same noise, the same distribution from fresh draws."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from registry.whitening import PCAWhitening

_path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_map_scale.py"
_spec = importlib.util.spec_from_file_location("bench_map_scale", _path)
scale = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(scale)


def real_map(n: int = 300, dim: int = 128, k: int = 16, seed: int = 0):
    """Unit 'real' rows with a few strong directions (fewer rows than dims: the whitening's dual form, as on the
    real maps), the whitening fitted on them, and its reduce function."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 24)) @ rng.standard_normal((24, dim)) + 0.3 * rng.standard_normal((n, dim))
    x = scale._unit(x)
    w = PCAWhitening(dim, k).fit(x)

    def reduce(v):
        with torch.inference_mode():
            return w(torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32))).numpy()

    return x, w, reduce


def test_the_projected_draw_gives_the_full_space_generators_rows_from_the_same_noise():
    others, w, reduce = real_map()
    gen = scale.ProjectedDistractors(others, w)
    assert gen.orthonormality_error < 1e-6
    a, b, lam, noise = scale._distractor_draws(others, 5000, 400, seed=3)
    old = scale._unit(reduce(scale._distractors(others, 5000, 400, seed=3)))  # what database_file stores
    new = gen.from_draws(others, a, b, lam, noise, w.U.double().numpy())
    np.testing.assert_allclose(new, old, atol=2e-5)


def test_fresh_projected_draws_match_the_full_space_distribution():
    """Two draws of each generator: the projected draw differs from the full-space one by no more than two draws of
    one generator differ from each other (per-dimension means, quantiles of the similarity to real rows)."""
    others, w, reduce = real_map(seed=1)
    gen = scale.ProjectedDistractors(others, w)
    n, step = 20000, 5000

    def old(seed):
        rows = [scale._distractors(others, s, step, seed) for s in range(0, n, step)]
        return scale._unit(reduce(np.concatenate(rows)))

    def new(seed):
        return np.concatenate([gen.draw(s, step, seed) for s in range(0, n, step)])

    old1, old2, new1, new2 = old(0), old(7), new(0), new(5)
    probes = scale._unit(reduce(others[np.random.default_rng(2).choice(len(others), 5)]))  # as a query sees them
    for q in (0.01, 0.1, 0.5, 0.9, 0.99):
        def quant(x):
            return np.quantile(x @ probes.T, q, axis=0)

        noise = max(np.abs(quant(old2) - quant(old1)).max(), np.abs(quant(new2) - quant(new1)).max())
        assert np.abs(quant(new1) - quant(old1)).max() <= 2.5 * noise + 0.002, q
    noise = max(np.abs(old1.mean(0) - old2.mean(0)).max(), np.abs(new1.mean(0) - new2.mean(0)).max())
    assert np.abs(new1.mean(0) - old1.mean(0)).max() <= 2.5 * noise + 0.001
    assert np.allclose(np.linalg.norm(new1, axis=1), 1.0, atol=1e-5)


def test_whitening_components_that_are_not_orthonormal_are_refused():
    others, w, _ = real_map()
    w.U[:, 0] *= 2.0
    with pytest.raises(ValueError, match="not orthonormal"):
        scale.ProjectedDistractors(others, w)
