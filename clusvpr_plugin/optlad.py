"""OptLAD aggregation: grouped, attention-weighted VLAD in matrix-product form."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from registry.models.aggregators.netvlad import init_assignment


class OptLAD(nn.Module):
    """Expand C -> E*C, split into G groups of D, assign each group vector softly to K shared centres."""

    def __init__(self, in_channels: int = 512, num_clusters: int = 64, expansion: int = 2, groups: int = 8,
                 feature_size: Tuple[int, int] = (30, 40), p_init: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        if (expansion * in_channels) % groups:
            raise ValueError(f"expansion*in_channels ({expansion * in_channels}) must be divisible by groups "
                             f"({groups})")
        if int(num_clusters) < 1:
            raise ValueError(f"num_clusters must be >= 1, got {num_clusters}")
        self.in_channels, self.num_clusters, self.groups = int(in_channels), int(num_clusters), int(groups)
        self.cluster_dim = expansion * in_channels // groups
        self.out_dim = self.num_clusters * self.cluster_dim
        self.feature_size = (int(feature_size[0]), int(feature_size[1]))
        self.eps = eps
        self.linear = nn.Linear(in_channels, expansion * in_channels, bias=False)
        self.p = nn.Parameter(torch.full((self.feature_size[0] * self.feature_size[1],), float(p_init)))
        self.conv = nn.Conv2d(self.cluster_dim, num_clusters, kernel_size=1, bias=False)
        self.centroids = nn.Parameter(torch.rand(num_clusters, self.cluster_dim))
        self.cluster_source: Optional[Tuple[torch.Tensor, torch.Tensor]] = None

    def p_map(self, h: int, w: int) -> torch.Tensor:
        """GeM exponents for an h x w map: the learned map itself, or bilinearly resampled to another size."""
        p = self.p.view(1, 1, *self.feature_size)
        # an exported graph always resamples (the identity at the learned size), so it serves every map size
        if (h, w) != self.feature_size or torch.onnx.is_in_onnx_export():
            p = F.interpolate(p, size=(h, w), mode="bilinear", align_corners=False)
        return p.reshape(h * w)

    def _tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, L, G, D): L2-normalise each location's C-vector, expand to E*C, split into G groups
        of D, in the layout the linear layer writes (no permuted copies); L = H*W, row-major.

        A channels-last map (what the CWT stack gives) makes the (N, L, C) token view free.
        """
        n, _, h, w = x.shape
        y = self.linear(F.normalize(x.flatten(2).transpose(1, 2), dim=-1))  # (N, L, E*C)
        return y.view(n, h * w, self.groups, self.cluster_dim)

    def _assignment(self, y: torch.Tensor, p: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Soft assignment s (N, L, G, K) of token-layout group vectors y (N, L, G, D) and their attention
        a (N, L, G), the GeM of each group vector with its location's exponent; p holds one exponent per location."""
        logits = F.linear(y, self.conv.weight.view(self.num_clusters, self.cluster_dim).to(y.dtype))
        pl = p.view(1, -1, 1)
        a = torch.sigmoid(y.clamp(min=self.eps).pow(pl.unsqueeze(-1)).mean(-1).pow(1.0 / pl))  # (N, L, G)
        return F.softmax(logits, dim=-1), a

    def _weighted_assignment(self, y: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """a * s in token layout: (N, L, G, D) -> (N, L, G, K)."""
        s, a = self._assignment(y, p)
        return s * a.unsqueeze(-1)

    def vlad(self, x: torch.Tensor) -> torch.Tensor:
        """Un-normalised OptLAD (N, K, D) of a conv feature map (N, C, H, W): one batched product over (L, G)."""
        n, _, h, w = x.shape
        y = self._tokens(x)
        A = self._weighted_assignment(y, self.p_map(h, w).to(y.dtype)).view(n, -1, self.num_clusters)  # (N, LG, K)
        Y = y.view(n, -1, self.cluster_dim)  # (N, LG, D)
        return torch.bmm(A.transpose(1, 2), Y) - self.centroids.to(Y.dtype).unsqueeze(0) * A.sum(1).unsqueeze(-1)

    def patch_vlads(self, x: torch.Tensor, rows: int = 3, cols: int = 4) -> torch.Tensor:
        """Un-normalised OptLAD of each cell of a rows x cols grid (N, rows*cols, K, D), row-major.

        Each cell uses the exponents of its own window of the map, so the cells sum to `vlad(x)` exactly.
        """
        n, _, h, w = x.shape
        if h < rows or w < cols:
            raise ValueError(f"a {rows}x{cols} region grid needs a feature map of at least that size, got {h}x{w}")
        y = self._tokens(x)
        A = self._weighted_assignment(y, self.p_map(h, w).to(y.dtype))  # (N, L, G, K)
        A, y = A.view(n, h, w, -1, self.num_clusters), y.view(n, h, w, -1, self.cluster_dim)
        r_edges = [round(i * h / rows) for i in range(rows + 1)]
        c_edges = [round(j * w / cols) for j in range(cols + 1)]
        cells = []
        for i in range(rows):
            for j in range(cols):
                win = (slice(None), slice(r_edges[i], r_edges[i + 1]), slice(c_edges[j], c_edges[j + 1]))
                a = A[win].reshape(n, -1, self.num_clusters)
                cells.append(torch.bmm(a.transpose(1, 2), y[win].reshape(n, -1, self.cluster_dim))
                             - self.centroids.to(y.dtype) * a.sum(1).unsqueeze(-1))
        return torch.stack(cells, dim=1)

    @staticmethod
    def normalise(vlad: torch.Tensor) -> torch.Tensor:
        """Intra-normalise each cluster row, flatten, L2-normalise: (..., K, D) -> (..., K*D)."""
        return F.normalize(F.normalize(vlad, dim=-1).flatten(-2), dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.normalise(self.vlad(x))

    def local_descriptors(self, x: torch.Tensor) -> torch.Tensor:
        """The grouped D-dim vectors the assignment sees, flattened (N*G*L, D) image by image, group by group:
        what k-means should cluster."""
        return self._tokens(x).transpose(1, 2).reshape(-1, self.cluster_dim)

    @torch.no_grad()
    def init_from_clusters(self, centroids: torch.Tensor, descriptors: torch.Tensor) -> float:
        """Set centres and the assignment from k-means centres in the grouped space; returns alpha."""
        return init_assignment(self, centroids, descriptors)

    @torch.no_grad()
    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """Group attention averaged over groups (N, H, W)."""
        n, _, h, w = x.shape
        y = self._tokens(x)
        return self._assignment(y, self.p_map(h, w).to(y.dtype))[1].mean(-1).view(n, h, w)
