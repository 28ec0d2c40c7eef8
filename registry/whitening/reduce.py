"""Reducing a model's descriptor to leading whitening components (or to no whitening). Works on any module that
carries `whitening`, `aggregator.out_dim`, `config`, `name` and `descriptor_dim`, as a VPRModel does."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn


@torch.no_grad()
def set_whitening_dim(model: nn.Module, dim: Optional[int]) -> nn.Module:
    """Keep the `dim` leading components of `model`'s fitted whitening, or drop it (`None`); its config follows, so
    a model rebuilt from it (`from_pretrained`, `save_pretrained`) gets `whitening_dim=dim`. Returns `model`."""
    if model.whitening is None:
        raise RuntimeError("this model has no whitening layer (built with whitening_dim=None)")
    if dim is None:
        model.whitening = None
    else:
        model.whitening = model.whitening.truncated(int(dim))
    model.config.setdefault("model_args", {})["whitening_dim"] = None if dim is None else int(dim)
    model.config["descriptor_dim"] = model.descriptor_dim
    return model


def set_descriptor_dim(model: nn.Module, dim: int) -> nn.Module:
    """Give `dim`-d descriptors: the `dim` leading components of the fitted whitening, or the aggregator's own
    descriptor (`aggregator.out_dim`: no whitening); any other size raises a ValueError listing the valid ones.
    Recorded in config like `set_whitening_dim`. Returns `model`."""
    if isinstance(dim, bool) or int(dim) != dim:
        raise ValueError(f"descriptor_dim must be an integer, got {dim!r}")
    dim = int(dim)
    if dim == model.descriptor_dim:
        return model
    whitening = model.whitening
    if whitening is None or not whitening.fitted:
        raise ValueError(
            f"{model.name} gives {model.descriptor_dim}-d descriptors only, not {dim}: it has no fitted PCA "
            "whitening to pick components from. Load weights that include one (pretrained=...) or fit it "
            "with model.fit_whitening(descriptors), or leave descriptor_dim unset"
        )
    top = whitening.out_dim
    if dim == model.aggregator.out_dim:
        return set_whitening_dim(model, None)
    if not 1 <= dim <= top:
        examples = ", ".join(str(d) for d in [d for d in (4096, 2048, 1024, 512, 256, 128) if d <= top] or [top])
        raise ValueError(
            f"{model.name} cannot give {dim}-d descriptors: valid sizes are 1..{top} (the leading components of "
            f"its fitted {top}-d PCA whitening, e.g. {examples}) or {model.aggregator.out_dim} (no whitening)"
        )
    return set_whitening_dim(model, dim)


def has_components(whitening: Optional[nn.Module], k: int, fit_now: bool = False) -> bool:
    """Whether `whitening` (None: the model has none) has `k` leading components to keep: it is fitted (or
    `fit_now`: will be before use) and has at least `k`."""
    return whitening is not None and (whitening.fitted or fit_now) and k <= whitening.out_dim
