"""registry.whitening.choose: candidate sizes, and the size chosen on validation."""
from __future__ import annotations

import numpy as np
import torch

from registry.whitening import PCAWhitening, select_whitening, too_large


def _fitted(in_dim: int = 12, out_dim: int = 6) -> PCAWhitening:
    rng = np.random.default_rng(0)
    return PCAWhitening(in_dim, out_dim).fit(torch.tensor(rng.normal(size=(40, in_dim)) * np.linspace(3, 1, in_dim)))


def test_sizes_beyond_the_whitening_are_the_ones_it_cannot_give():
    w = PCAWhitening(12, 6)
    assert too_large(w, (8, None, 6, 1, 7)) == [8, 7] and too_large(w, (None, 6)) == []


def test_each_candidate_is_measured_on_its_leading_components_and_the_best_score_wins():
    w, x = _fitted(), torch.randn(5, 12)
    measured = {}

    def measure(cut):
        measured[None if cut is None else cut.out_dim] = None if cut is None else cut(x)
        return {"R@1": {6: 1.0, 2: 3.0, None: 2.0}[None if cut is None else cut.out_dim]}

    rows, best = select_whitening(w, (6, 2, None), measure, lambda row: row["R@1"])
    assert rows == [{"dim": 6, "R@1": 1.0}, {"dim": 2, "R@1": 3.0}, {"dim": None, "R@1": 2.0}] and best == 1
    torch.testing.assert_close(measured[6], w(x))
    # 2 leading components: the first two whitened coordinates, renormalised (float64 reference)
    y = ((x.double() - w.mu.double()) @ w.U.double()) * w.lams.double().rsqrt()
    torch.testing.assert_close(measured[2].double(), torch.nn.functional.normalize(y[:, :2], dim=-1), atol=1e-5,
                               rtol=1e-5)


def test_a_tie_goes_to_the_candidate_listed_first():
    w = _fitted()
    for dims in ((None, 4, 2), (2, None, 4), (4, 2)):
        rows, best = select_whitening(w, dims, lambda cut: {"s": 1.0}, lambda row: row["s"])
        assert best == 0 and [r["dim"] for r in rows] == list(dims)
