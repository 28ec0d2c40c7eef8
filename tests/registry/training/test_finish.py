"""registry.training.finish: the PCA fit of a finished run, the whitening size chosen on validation, the facts."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_vpr import small_config

import registry
from registry.training import finish
from registry.whitening import fit_sample


def _raw(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim)) * np.linspace(3.0, 0.2, dim)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_the_whitening_is_fitted_on_the_seeded_sample_of_training_images():
    model = registry.create("tiny_netvlad")  # a 128-d NetVLAD whitened to 8 dims
    raw = _raw(40, model.aggregator.out_dim)
    asked = []

    def describe(indices):
        asked.append(indices)
        return raw[indices]

    cfg = small_config(pca_images=24, seed=3)
    assert finish.fit_pca(model, 40, describe, cfg)
    pick = sorted(np.random.default_rng(3).choice(40, size=24, replace=False).tolist())
    assert asked == [pick] and fit_sample(40, 24, 3).tolist() == pick
    # against float64 numpy: the 8 leading eigenvalues of the sample's covariance
    x = raw[pick].astype(np.float64)
    eig = np.linalg.eigvalsh(np.cov(x, rowvar=False))[::-1][:8]
    np.testing.assert_allclose(model.whitening.lams.numpy(), eig, rtol=1e-4)
    np.testing.assert_allclose(model.whitening.mu.numpy(), x.mean(0), atol=1e-6)
    assert not finish.fit_pca(registry.create("tiny_gem"), 40, describe, cfg) and len(asked) == 1


def _fitted_model():
    model = registry.create("tiny_netvlad")
    model.whitening.fit(torch.from_numpy(_raw(40, model.aggregator.out_dim)))
    return model


def test_each_candidate_is_measured_on_its_leading_components_and_the_best_is_kept():
    model = _fitted_model()
    raw = torch.from_numpy(_raw(10, model.aggregator.out_dim, seed=1))
    full = model.whitening
    seen = []

    def recalls(d):  # a score the test controls: 3 components are best
        seen.append(d)
        return {"R@1": 10.0, "R@5": {8: 50.0, 3: 70.0, 128: 60.0}[d.shape[1]]}

    selection, chosen = finish.choose_whitening(model, raw, recalls, (8, 3, None), "R@5")
    assert selection == {"chosen": 3, "by": "R@5", "candidates": [
        {"dim": 8, "R@1": 10.0, "R@5": 50.0}, {"dim": 3, "R@1": 10.0, "R@5": 70.0},
        {"dim": None, "R@1": 10.0, "R@5": 60.0}]}
    assert chosen == {"R@1": 10.0, "R@5": 70.0}
    np.testing.assert_array_equal(seen[0], full(raw).numpy())
    np.testing.assert_array_equal(seen[1], full.truncated(3)(raw).numpy())
    np.testing.assert_array_equal(seen[2], raw.numpy())
    assert model.descriptor_dim == 3 and model.config["model_args"]["whitening_dim"] == 3
    assert finish.describe_choice(selection) == "3 (8: 50.00, 3: 70.00, none: 60.00)"


def test_a_tie_goes_to_the_first_candidate_and_none_drops_the_whitening():
    model = _fitted_model()
    raw = torch.from_numpy(_raw(10, model.aggregator.out_dim, seed=1))
    selection, _ = finish.choose_whitening(model, raw, lambda d: {"R@5": 50.0}, (None, 8), "R@5")
    assert selection["chosen"] is None and model.whitening is None
    assert model.descriptor_dim == model.aggregator.out_dim == model.config["descriptor_dim"]
    assert finish.describe_choice(selection) == "none (none: 50.00, 8: 50.00)"


def test_the_summary_and_the_facts_the_layout_records():
    cfg, best = small_config(), {"score": 70.0, "generation": 0, "epoch": 2, "recalls": {"R@5": 70.0}}
    selection = {"chosen": 8, "by": "R@5", "candidates": []}
    assert finish.summary_of(best, {"R@5": 71.0}, 12.34, [{"epoch": 0}], None) == {
        "best": best, "final_val": {"R@5": 71.0}, "train_seconds": 12.3, "history": [{"epoch": 0}]}
    assert finish.summary_of(best, {}, 1.0, [], selection)["whitening_selection"] is selection
    facts = finish.training_facts("train", "val", "global", best, cfg, 2, selection)
    assert facts == {"datasets": ["train"], "validation": "val", "recipe": "global",
                     "best": {"generation": 0, "epoch": 2, "recalls": {"R@5": 70.0}}, "options": cfg.to_dict(),
                     "world_size": 2, "whitening_selection": selection}
    assert "whitening_selection" not in finish.training_facts("train", None, "global", best, cfg, 1, None)
    assert finish.recall_facts("val", {"R@5": 71.0}) == {"val": {"R@5": 71.0}}
    assert finish.recall_facts(None, {}) is None and finish.recall_facts("val", {}) is None


@pytest.mark.parametrize("dims", [(None, 4), (4, None), (8,)])
def test_the_chosen_model_gives_what_its_candidate_was_measured_on(dims):
    model = _fitted_model()
    raw = torch.from_numpy(_raw(10, model.aggregator.out_dim, seed=2))
    width = dims[0] or model.aggregator.out_dim  # the candidate listed first wins
    measured = {}

    def recalls(d):
        measured[d.shape[1]] = d
        return {"R@5": 100.0 if d.shape[1] == width else 0.0}

    finish.choose_whitening(model, raw, recalls, dims, "R@5")
    with torch.no_grad():
        out = model.whitening(raw) if model.whitening is not None else raw
    torch.testing.assert_close(out, torch.from_numpy(measured[width]))
