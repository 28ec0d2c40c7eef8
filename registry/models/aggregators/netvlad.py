"""NetVLAD (Arandjelovic et al., CVPR 2016) with alpha initialisation from cluster centres."""
from __future__ import annotations

import math
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..._util.ranges import ArgRange
from .checks import check_feature_map


def alpha_from_clusters(centroids: torch.Tensor, descriptors: torch.Tensor) -> Tuple[float, torch.Tensor]:
    """alpha = -ln(0.01) / mean(top1 - top2 dot products with the normalised centres); returns (alpha, c_hat)."""
    if centroids.ndim != 2 or descriptors.ndim != 2 or centroids.shape[1] != descriptors.shape[1]:
        raise ValueError(
            f"centroids (K, D) and descriptors (N, D) must share D; got {tuple(centroids.shape)}, "
            f"{tuple(descriptors.shape)}"
        )
    if centroids.shape[0] < 2 or descriptors.shape[0] < 1:
        raise ValueError("alpha initialisation needs at least 2 centroids and 1 descriptor")
    c_hat = F.normalize(centroids.float(), dim=1)
    top2 = (descriptors.float() @ c_hat.T).topk(2, dim=1).values
    gap = (top2[:, 0] - top2[:, 1]).mean()
    return float(-math.log(0.01) / gap), c_hat


@torch.no_grad()
def init_assignment(agg: nn.Module, centroids: torch.Tensor, descriptors: torch.Tensor) -> float:
    """Copy k-means centres into `agg.centroids`, set `agg.conv` to alpha * normalised centres, keep the source."""
    if centroids.shape != agg.centroids.shape:
        raise ValueError(f"expected centroids of shape {tuple(agg.centroids.shape)}, got {tuple(centroids.shape)}")
    alpha, c_hat = alpha_from_clusters(centroids, descriptors)
    agg.centroids.copy_(centroids)
    agg.conv.weight.copy_((alpha * c_hat)[:, :, None, None])
    agg.cluster_source = (centroids.detach().cpu().float(), descriptors.detach().cpu().float())
    return alpha


def vlad_residuals(assign: torch.Tensor, x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """sum_l a(k,l) (x(l) - c_k) as A X^T - c_k sum_l A(k,l): (N,K,L), (N,D,L), (K,D) -> (N,K,D)."""
    return torch.bmm(assign, x.transpose(1, 2)) - centroids.unsqueeze(0) * assign.sum(-1, keepdim=True)


class NetVLAD(nn.Module):
    """Soft-assignment VLAD over L2-normalised local descriptors; intra- and L2-normalised output."""

    arg_ranges = {"num_clusters": ArgRange(1, 1024)}  # checked before building (registry._util.ranges)

    def __init__(self, in_channels: int, num_clusters: int = 64, normalize_input: bool = True) -> None:
        super().__init__()
        if int(num_clusters) < 1:
            raise ValueError(f"num_clusters must be >= 1, got {num_clusters}")
        self.in_channels = self.cluster_dim = int(in_channels)
        self.num_clusters = int(num_clusters)
        self.out_dim = self.num_clusters * self.cluster_dim
        self.normalize_input = normalize_input
        self.conv = nn.Conv2d(in_channels, num_clusters, kernel_size=1, bias=False)
        self.centroids = nn.Parameter(torch.rand(num_clusters, in_channels))
        self.cluster_source: Optional[Tuple[torch.Tensor, torch.Tensor]] = None

    @torch.no_grad()
    def init_from_clusters(self, centroids: torch.Tensor, descriptors: torch.Tensor) -> float:
        """Set centres and assignment from k-means centres and sampled local descriptors; returns alpha."""
        return init_assignment(self, centroids, descriptors)

    def local_descriptors(self, x: torch.Tensor) -> torch.Tensor:
        """The (N, D, H, W) vectors the assignment sees (what k-means should cluster)."""
        return F.normalize(x, dim=1) if self.normalize_input else x

    def assignment(self, x: torch.Tensor) -> torch.Tensor:
        """Soft assignment (N, K, H*W) of the local descriptors."""
        return F.softmax(self.conv(x).flatten(2), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_feature_map(x, self.in_channels)
        x = self.local_descriptors(x)
        vlad = vlad_residuals(self.assignment(x), x.flatten(2), self.centroids)
        return F.normalize(F.normalize(vlad, dim=2).flatten(1), dim=1)

    @torch.no_grad()
    def attention_maps(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Assignment confidence per location (N, H, W): the largest soft-assignment weight."""
        x = self.local_descriptors(x)
        return {"netvlad_assignment_confidence": self.assignment(x).max(1).values.view(x.shape[0], *x.shape[2:])}
