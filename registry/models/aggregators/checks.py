"""Input validation shared by aggregators: clear ValueErrors instead of shape errors deep inside."""
from __future__ import annotations

import torch


def check_feature_map(x: torch.Tensor, in_channels: int, min_size: int = 1) -> None:
    """Require a floating (N, in_channels, H, W) map with H, W >= min_size."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"expected a torch.Tensor feature map, got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"expected a 4-D feature map (N, {in_channels}, H, W), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"expected a floating-point feature map, got dtype {x.dtype}; convert with .float()")
    if x.shape[1] != in_channels:
        raise ValueError(f"expected {in_channels} channels, got {x.shape[1]} (shape {tuple(x.shape)})")
    if x.shape[2] < min_size or x.shape[3] < min_size:
        raise ValueError(
            f"feature map {x.shape[2]}x{x.shape[3]} is too small: at least {min_size}x{min_size} is needed; "
            "use a larger input image"
        )
