"""Where a map's model looks in a query image: its aggregator's first attention map (ClusVPR's CWT cluster weights,
NetVLAD's assignment confidence, GeM's activation energy) or, for an aggregator without one, the norm of the local
features; upsampled to the model's input size and scaled to 0..1."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..datasets.images import open_rgb
from ..evaluation.extract import Preprocess


@torch.no_grad()
def heatmap(model: torch.nn.Module, image: Any) -> np.ndarray:
    """(H, W) float32 in [0, 1] on the model's input grid for one image (a PIL image or a path)."""
    from PIL import Image

    if not isinstance(image, Image.Image):
        image = open_rgb(image)
    x = Preprocess(model.input_config)(image).unsqueeze(0)
    features = model.local_features(x)  # one backbone pass, for the attention maps or for the fallback
    grid = _attention(model, features)
    if grid is None:
        grid = features.float().norm(dim=1)
    grid = grid.float().reshape(1, 1, *grid.shape[-2:])
    out = F.interpolate(grid, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)[0, 0]
    out = torch.nan_to_num(out)
    low, high = float(out.min()), float(out.max())
    scaled = (out - low) / (high - low) if high > low else torch.zeros_like(out)
    return scaled.clamp(0, 1).numpy().astype(np.float32)


def _attention(model: torch.nn.Module, features: torch.Tensor):
    """The aggregator's first attention map of these local features, or None where it has none."""
    maps = getattr(model.aggregator, "attention_maps", None)
    if maps is None:
        return None
    try:
        return next(iter(maps(features).values()))
    except NotImplementedError:
        return None
