"""PCA whitening is fitted once, on training descriptors, only when the model has an unfitted one."""
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from registry.evaluation import extract_descriptors, fit_whitening_if_needed
from registry.whitening import PCAWhitening

CONFIG = {"input_size": (3, 8, 8), "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25), "resize": "fixed"}


class Whitened(nn.Module):
    """A tiny descriptor (16-d) followed by a PCA whitening to 4 dims, as VPRModel composes them."""

    def __init__(self, whitening) -> None:
        super().__init__()
        self.proj = nn.Linear(3 * 8 * 8, 16)
        self.whitening = whitening
        self.input_config = CONFIG

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = F.normalize(self.proj(x.flatten(1)), dim=-1)
        return F.normalize(self.whitening(d) if self.whitening is not None else d, dim=-1)


def images(folder: Path, n: int) -> list:
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return sorted(folder.glob("*.png"))


def test_unfitted_whitening_is_fitted_on_training_descriptors(tmp_path):
    model = Whitened(PCAWhitening(16, 4))
    train = images(tmp_path, 12)
    raw = extract_descriptors(model, train, device="cpu", progress=False)
    assert fit_whitening_if_needed(model, train, device="cpu", progress=False)
    assert model.whitening.fitted
    expected = PCAWhitening(16, 4).fit(torch.from_numpy(raw))
    torch.testing.assert_close(model.whitening.U.abs(), expected.U.abs(), atol=1e-4, rtol=1e-4)
    assert extract_descriptors(model, train, device="cpu", progress=False).shape == (12, 4)


def test_fitted_whitening_is_not_refitted(tmp_path):
    model = Whitened(PCAWhitening(16, 4))
    train = images(tmp_path, 12)
    fit_whitening_if_needed(model, train, device="cpu", progress=False)
    before = model.whitening.U.clone()
    assert not fit_whitening_if_needed(model, images(tmp_path / "other", 20), device="cpu", progress=False)
    assert torch.equal(model.whitening.U, before)


def test_model_without_whitening_is_left_alone(tmp_path):
    assert not fit_whitening_if_needed(Whitened(None), images(tmp_path, 3), device="cpu", progress=False)


def test_too_few_training_images_is_explained(tmp_path):
    with pytest.raises(ValueError, match=r"4-d PCA whitening needs more than 4 training images, got 3"):
        fit_whitening_if_needed(Whitened(PCAWhitening(16, 4)), images(tmp_path, 3), device="cpu", progress=False)


def test_at_most_max_images_are_used(tmp_path):
    model = Whitened(PCAWhitening(16, 4))
    seen = []
    original = model.forward
    model.forward = lambda x: (seen.append(len(x)), original(x))[1]
    fit_whitening_if_needed(model, images(tmp_path, 30), max_images=10, device="cpu", progress=False)
    assert sum(seen) == 10
