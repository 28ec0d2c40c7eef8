"""Fit a model's PCA whitening on training descriptors once, when it has a whitening layer not yet fitted: the
whitening module (registry.whitening) fits, on its sample of the images; this module extracts their descriptors."""
from __future__ import annotations

import os
from typing import Any, Sequence, Union

from torch import nn

from ..whitening import enough_to_fit, fit_on_sample, needs_fit
from .extract import extract_descriptors

DEFAULT_MAX_IMAGES = 10_000


def needs_whitening_fit(model: nn.Module) -> bool:
    """True when `model.whitening` exists and is not fitted."""
    return needs_fit(model)


def fit_whitening_if_needed(
    model: nn.Module,
    train_images: Sequence[Union[str, os.PathLike]],
    max_images: int = DEFAULT_MAX_IMAGES,
    seed: int = 0,
    **extract_kwargs: Any,
) -> bool:
    """Fit `model.whitening` on descriptors of up to `max_images` training images; False if nothing to fit.

    An unfitted whitening passes descriptors through, so the model's output is the pre-whitening descriptor.
    """
    if not needs_fit(model):
        return False
    out_dim = model.whitening.out_dim
    if not enough_to_fit(model.whitening, len(train_images)):
        raise ValueError(
            f"fitting a {out_dim}-d PCA whitening needs more than {out_dim} training images, got "
            f"{len(train_images)}: use a larger training set or a model with a smaller whitening dim"
        )

    def describe(pick) -> Any:
        return extract_descriptors(model, [train_images[i] for i in pick], desc="PCA training descriptors",
                                   **extract_kwargs)

    fit_on_sample(model.whitening, len(train_images), describe, max_images, seed)
    return True
