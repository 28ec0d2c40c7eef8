"""Fit a model's PCA whitening on training descriptors once, when it has a whitening layer not yet fitted."""
from __future__ import annotations

import os
from typing import Any, Sequence, Union

import numpy as np
import torch
from torch import nn

from .extract import extract_descriptors

DEFAULT_MAX_IMAGES = 10_000


def needs_whitening_fit(model: nn.Module) -> bool:
    """True when `model.whitening` exists and is not fitted."""
    whitening = getattr(model, "whitening", None)
    return whitening is not None and not whitening.fitted


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
    if not needs_whitening_fit(model):
        return False
    out_dim = getattr(model.whitening, "out_dim", 0)
    if len(train_images) <= out_dim:
        raise ValueError(
            f"fitting a {out_dim}-d PCA whitening needs more than {out_dim} training images, got "
            f"{len(train_images)}: use a larger training set or a model with a smaller whitening dim"
        )
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(train_images), size=min(max_images, len(train_images)), replace=False))
    descs = extract_descriptors(model, [train_images[i] for i in pick], desc="PCA training descriptors",
                                **extract_kwargs)
    model.whitening.fit(torch.from_numpy(descs))
    return True
