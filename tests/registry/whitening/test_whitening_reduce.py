"""registry.whitening.reduce: a model's descriptor cut to leading whitening components, on any module that carries
what a VPRModel carries."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from registry.whitening import PCAWhitening, has_components, set_descriptor_dim, set_whitening_dim


class _Carrier(nn.Module):
    """A 10-d descriptor whitened to 4 dims: `whitening`, `aggregator.out_dim`, `config`, `name`, `descriptor_dim`."""

    name = "carrier"

    def __init__(self) -> None:
        super().__init__()
        self.aggregator = nn.Identity()
        self.aggregator.out_dim = 10
        self.whitening = PCAWhitening(10, 4).fit(torch.randn(30, 10))
        self.config = {}

    @property
    def descriptor_dim(self) -> int:
        w = self.whitening
        return w.out_dim if w is not None and w.fitted else self.aggregator.out_dim


def test_keeping_components_or_none_updates_the_config():
    model = _Carrier()
    full = model.whitening
    assert set_whitening_dim(model, 2) is model
    assert model.whitening.out_dim == 2 and torch.equal(model.whitening.U, full.U[:, :2])
    assert model.config == {"model_args": {"whitening_dim": 2}, "descriptor_dim": 2}
    set_whitening_dim(model, None)
    assert model.whitening is None and model.config == {"model_args": {"whitening_dim": None}, "descriptor_dim": 10}
    with pytest.raises(RuntimeError, match="no whitening layer"):
        set_whitening_dim(model, 2)


def test_a_descriptor_dim_is_leading_components_or_the_aggregators_own():
    model = _Carrier()
    assert set_descriptor_dim(model, 4) is model and model.config == {}  # already 4-d: nothing to do
    set_descriptor_dim(model, 3)
    assert model.descriptor_dim == 3
    set_descriptor_dim(model, 10)
    assert model.whitening is None and model.descriptor_dim == 10
    bad = _Carrier()
    for dim, message in ((2.5, "must be an integer"), (True, "must be an integer"), (7, r"valid sizes are 1\.\.4 "
                                                                                    r".* or 10 \(no whitening\)")):
        with pytest.raises(ValueError, match=message):
            set_descriptor_dim(bad, dim)
    bad.whitening = PCAWhitening(10, 4)  # not fitted: no components to pick
    with pytest.raises(ValueError, match="carrier gives 10-d descriptors only, not 3"):
        set_descriptor_dim(bad, 3)


def test_components_are_there_once_fitted_or_about_to_be():
    fitted, unfitted = _Carrier().whitening, PCAWhitening(10, 4)
    assert has_components(fitted, 4) and has_components(fitted, 1) and not has_components(fitted, 5)
    assert not has_components(unfitted, 2) and has_components(unfitted, 2, fit_now=True)
    assert not has_components(None, 1, fit_now=True)
