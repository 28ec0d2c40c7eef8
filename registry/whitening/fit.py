"""Fitting a model's whitening: whether it needs a fit, which training images it is fitted on, and the fit."""
from __future__ import annotations

from typing import Callable, Union

import numpy as np
import torch
from torch import nn


def needs_fit(model: nn.Module) -> bool:
    """True when `model.whitening` exists and is not fitted (an unfitted whitening passes descriptors through)."""
    whitening = getattr(model, "whitening", None)
    return whitening is not None and not whitening.fitted


def enough_to_fit(whitening: nn.Module, n: int) -> bool:
    """Whether `n` descriptors can fit `whitening`: a d-dimensional PCA needs more than d of them."""
    return n > whitening.out_dim


def fit_sample(n: int, max_images: int, seed: int) -> np.ndarray:
    """Sorted indices of the (at most `max_images`) images of `n` that a whitening is fitted on, drawn without
    replacement from `seed` (the trainer's and `registry.evaluation.fit_whitening_if_needed`'s sample)."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=min(max_images, n), replace=False))


def fit_on_sample(whitening: nn.Module, n: int, describe: Callable[[np.ndarray], np.ndarray], max_images: int,
                  seed: int) -> nn.Module:
    """Fit `whitening` on `describe(indices)`, the un-whitened (k, in_dim) descriptors of the `fit_sample` of `n`
    images; returns the fitted whitening."""
    return whitening.fit(torch.from_numpy(describe(fit_sample(n, max_images, seed))))


def fit_model_whitening(model: nn.Module, descs: Union[torch.Tensor, np.ndarray]) -> nn.Module:
    """Fit `model.whitening` on un-whitened descriptors (N, aggregator.out_dim) (VPRModel.fit_whitening)."""
    if getattr(model, "whitening", None) is None:
        raise RuntimeError("this model was built without a whitening layer (whitening_dim=None)")
    return model.whitening.fit(descs)
