"""GeM pooling (Radenovic et al., TPAMI 2018) with a learnable exponent p."""
from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F
from torch import nn

from ..._util.ranges import ArgRange
from .checks import check_feature_map


class GeM(nn.Module):
    """Generalised mean over all locations: (mean x^p)^(1/p), then L2-normalised."""

    arg_ranges = {"p": ArgRange(0.1, 100, integer=False), "eps": ArgRange(1e-12, 1, integer=False)}

    def __init__(self, in_channels: int, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.in_channels = self.out_dim = int(in_channels)
        self.p = nn.Parameter(torch.tensor([float(p)]))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_feature_map(x, self.in_channels)
        pooled = x.clamp(min=self.eps).pow(self.p).mean(dim=(2, 3)).pow(1.0 / self.p)
        return F.normalize(pooled, dim=1)

    @torch.no_grad()
    def attention_maps(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Per-location activation energy (N, H, W): where GeM's mean draws its mass from."""
        return {"gem_activation_energy": x.clamp(min=self.eps).pow(self.p).sum(1)}
