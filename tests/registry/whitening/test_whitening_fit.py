"""registry.whitening.fit: which whitenings need a fit, the seeded sample they are fitted on, the fit itself."""
from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from registry.whitening import (
    PCAWhitening,
    enough_to_fit,
    fit_model_whitening,
    fit_on_sample,
    fit_sample,
    needs_fit,
)

PACKAGE = Path(__file__).resolve().parents[3] / "registry" / "whitening"


class _Carrier(nn.Module):
    """Anything that carries a `whitening` attribute, as a VPRModel does."""

    def __init__(self, whitening) -> None:
        super().__init__()
        self.whitening = whitening


def test_only_an_unfitted_whitening_needs_a_fit():
    w = PCAWhitening(6, 3)
    assert needs_fit(_Carrier(w)) and not needs_fit(_Carrier(None)) and not needs_fit(nn.Linear(2, 2))
    w.fit(torch.randn(10, 6))
    assert not needs_fit(_Carrier(w))


def test_a_d_dimensional_fit_needs_more_than_d_descriptors():
    w = PCAWhitening(6, 3)
    assert [enough_to_fit(w, n) for n in (2, 3, 4)] == [False, False, True]
    w.fit(torch.randn(4, 6))  # the layer agrees: 4 descriptors fit 3 dims
    with pytest.raises(ValueError, match="needs more than 3 descriptors, got 3"):
        PCAWhitening(6, 3).fit(torch.randn(3, 6))


def test_the_sample_is_sorted_distinct_bounded_and_seeded():
    a = fit_sample(100, 30, seed=5)
    assert a.tolist() == sorted(set(a.tolist())) and len(a) == 30 and a.min() >= 0 and a.max() < 100
    assert np.array_equal(a, fit_sample(100, 30, seed=5)) and not np.array_equal(a, fit_sample(100, 30, seed=6))
    assert fit_sample(12, 30, seed=0).tolist() == list(range(12))  # fewer images than the cap: all of them
    assert a.tolist() == sorted(np.random.default_rng(5).choice(100, size=30, replace=False).tolist())


def test_fit_on_sample_fits_on_the_descriptors_of_the_sample_only():
    rng = np.random.default_rng(0)
    descs = rng.normal(size=(50, 8)).astype(np.float32)
    asked = []
    w = fit_on_sample(PCAWhitening(8, 4), 50, lambda pick: (asked.append(pick), descs[pick])[1], 20, seed=1)
    assert [p.tolist() for p in asked] == [fit_sample(50, 20, 1).tolist()]
    x = descs[asked[0]].astype(np.float64)  # float64 numpy reference: the sample's mean and top eigenvalues
    np.testing.assert_allclose(w.mu.numpy(), x.mean(0), atol=1e-6)
    np.testing.assert_allclose(w.lams.numpy(), np.linalg.eigvalsh(np.cov(x, rowvar=False))[::-1][:4], rtol=1e-4)


def test_fitting_a_model_without_a_whitening_says_so():
    model = _Carrier(PCAWhitening(8, 2))
    assert fit_model_whitening(model, torch.randn(9, 8)) is model.whitening and model.whitening.fitted
    with pytest.raises(RuntimeError, match="built without a whitening layer"):
        fit_model_whitening(_Carrier(None), torch.randn(9, 8))


def test_the_whitening_package_imports_no_model_training_or_evaluation_code():
    imported = set()
    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level:
                imported.add("." * node.level + (node.module or ""))
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
                imported.update(n for n in names if n.startswith("registry"))
    assert imported <= {".apply", ".choose", ".fit", ".layer", ".reduce", ".._util.h5io"}, imported
