"""The ClusVPR aggregator: 4 CWTNet blocks, then OptLAD; callable on conv5_3 maps directly."""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from registry import ArgRange
from registry.models.aggregators import check_feature_map

from .cwt import CWTNet
from .optlad import OptLAD

MIN_FEATURE_SIZE = 2
# how the CWT blocks start: "default" = PyTorch's random init of the depthwise and 1x1 convs (the reference's);
# "identity" = each block starts as ReLU(BN(x)) (CWTNet.reset_to_identity), a training choice for fine-tuning
CWT_INITS = ("default", "identity")


class ClusVPRAggregator(nn.Module):
    """(N, C, H, W) conv features -> (N, K*D) intra- and L2-normalised OptLAD descriptor."""

    takes_feature_size = True
    min_feature_size = MIN_FEATURE_SIZE  # the CWT's neighbourhoods need a 2x2 map at least
    arg_ranges = {  # checked before building (registry._util.ranges)
        "num_clusters": ArgRange(1, 1024), "expansion": ArgRange(1, 16), "groups": ArgRange(1, 1024),
        "cwt_depth": ArgRange(0, 32), "heads": ArgRange(1, 64), "knn_k": ArgRange(1, 256),
        "dropout": ArgRange(0, 1, integer=False),
    }

    def __init__(self, in_channels: int = 512, feature_size: Tuple[int, int] = (30, 40), num_clusters: int = 64,
                 expansion: int = 2, groups: int = 8, cwt_depth: int = 4, heads: int = 2, knn_k: int = 10,
                 knn_backend: str = "auto", dropout: float = 0.1, cwt_init: str = "default") -> None:
        super().__init__()
        if cwt_init not in CWT_INITS:
            raise ValueError(f"cwt_init must be one of {CWT_INITS}, got {cwt_init!r}")
        self.in_channels, self.knn_k = int(in_channels), int(knn_k)
        self.cwt = nn.Sequential(*(CWTNet(in_channels, heads, 2.0, dropout, knn_k, knn_backend)
                                   for _ in range(cwt_depth)))
        if cwt_init == "identity":
            for block in self.cwt:
                block.reset_to_identity()
        self.optlad = OptLAD(in_channels, num_clusters, expansion, groups, feature_size)
        self.num_clusters, self.cluster_dim, self.out_dim = num_clusters, self.optlad.cluster_dim, self.optlad.out_dim

    @property
    def centroids(self) -> nn.Parameter:
        return self.optlad.centroids

    @property
    def cluster_source(self) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
        return self.optlad.cluster_source

    @cluster_source.setter
    def cluster_source(self, source: Optional[Tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.optlad.cluster_source = source

    def init_from_clusters(self, centroids: torch.Tensor, descriptors: torch.Tensor) -> float:
        """Alpha initialisation of OptLAD from centres in its grouped space."""
        return self.optlad.init_from_clusters(centroids, descriptors)

    def export_size_problem(self, feature_size: Tuple[int, int]) -> Optional[str]:
        """Why an ONNX graph traced on a `feature_size` (H, W) map would be wrong at other sizes, or None (the
        export hook registry.export_onnx calls): the exact KNN exports as a TopK over k+1 tokens fixed at trace
        time, so the CWT's 2x2-pooled grid plus its class token must hold at least k+1 tokens."""
        h, w = feature_size
        tokens = -(-h // 2) * -(-w // 2) + 1
        if not len(self.cwt) or tokens >= self.knn_k + 1:
            return None
        return (f"its {h}x{w} feature map gives {tokens} CWT tokens, fewer than the KNN's k+1 = {self.knn_k + 1}: "
                f"the exported TopK would be fixed at {tokens} neighbours and be wrong at larger sizes. Export at a "
                "larger input_size (at least 96x128 on VGG16)")

    def refine(self, x: torch.Tensor) -> torch.Tensor:
        """The CWT stack alone: (N, C, H, W) -> (N, C, H, W)."""
        check_feature_map(x, self.in_channels, MIN_FEATURE_SIZE)
        return self.cwt(x)

    def local_descriptors(self, x: torch.Tensor) -> torch.Tensor:
        """The grouped vectors OptLAD's assignment sees (for k-means)."""
        return self.optlad.local_descriptors(self.refine(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.optlad(self.refine(x))

    @torch.no_grad()
    def attention_maps(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Where the model looks, each (N, H, W): the last CWT block's cluster weights (class token dropped,
        upsampled from the pooled grid) and OptLAD's group attention after the CWT stack."""
        attn = self.cwt[-1].cwt.block.attn
        attn.record = True
        try:
            refined = self.refine(x)
        finally:
            attn.record = False
        n, _, h, w = x.shape
        hp, wp = -(-h // 2), -(-w // 2)
        cwt_w = attn.last_weights[:, 1:].reshape(n, 1, hp, wp)
        cwt_w = F.interpolate(cwt_w, scale_factor=2, mode="nearest")[:, 0, :h, :w]
        return {"cwt_cluster_weights": cwt_w, "optlad_group_attention": self.optlad.attention(refined)}
