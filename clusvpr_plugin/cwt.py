"""The clustering-based weighted transformer (CWT) and the CWTNet block stack of ClusVPR."""
from __future__ import annotations

import math
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .knn import knn_sq_dist_sum


def _minmax(x: torch.Tensor) -> torch.Tensor:
    """Per-row min-max normalisation to [0, 1]; a constant row maps to 0."""
    lo, hi = x.amin(-1, keepdim=True), x.amax(-1, keepdim=True)
    span = hi - lo
    return torch.where(span > 0, (x - lo) / torch.where(span > 0, span, torch.ones_like(span)), torch.zeros_like(x))


@torch.no_grad()
def cluster_weights(tokens: torch.Tensor, k: int = 10, backend: str = "auto") -> torch.Tensor:
    """(N, T, C) -> (N, T) in [0, 1]: high for tokens far from their k nearest neighbours (sparse regions)."""
    return weights_from_knn_sums(knn_sq_dist_sum(tokens, k, backend), k)


def weights_from_knn_sums(sums: torch.Tensor, k: int) -> torch.Tensor:
    """Cluster weights (N, T) from each token's summed squared distances to its k+1 nearest tokens."""
    d_hat = _minmax(sums)
    one_minus_rho = 1.0 - torch.exp(-d_hat / k)
    w = one_minus_rho / one_minus_rho.sum(-1, keepdim=True).clamp_min(torch.finfo(d_hat.dtype).tiny)
    return _minmax(w)


class ClusterWeightedAttention(nn.Module):
    """Multi-head self-attention whose value vectors are scaled by (0.5 + cluster weight) per token."""

    def __init__(self, dim: int = 256, heads: int = 2, k: int = 10, knn_backend: str = "auto") -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads, self.k, self.knn_backend = heads, k, knn_backend
        self.last_weights: "torch.Tensor | None" = None  # set during forward when `record` is True
        self.record = False
        self.query, self.key, self.value, self.out = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, c = x.shape
        w = cluster_weights(x.detach(), self.k, self.knn_backend).to(x.dtype)
        if self.record:
            self.last_weights = w.detach()
        q, k, v = self.query(x), self.key(x), self.value(x) * (0.5 + w).unsqueeze(-1)
        q, k, v = (z.view(n, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v)
        return self.out(y.transpose(1, 2).reshape(n, t, c))


class TransformerBlock(nn.Module):
    """x + Attn(x), then x + MLP(x); no LayerNorm (as the reference)."""

    def __init__(self, dim: int = 256, heads: int = 2, mlp_dim: int = 512, dropout: float = 0.1,
                 k: int = 10, knn_backend: str = "auto") -> None:
        super().__init__()
        self.attn = ClusterWeightedAttention(dim, heads, k, knn_backend)
        self.fc1, self.fc2 = nn.Linear(dim, mlp_dim), nn.Linear(mlp_dim, dim)
        self.drop = nn.Dropout(dropout)
        for fc in (self.fc1, self.fc2):
            nn.init.xavier_uniform_(fc.weight)
            nn.init.normal_(fc.bias, std=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x)
        return x + self.drop(self.fc2(self.drop(F.gelu(self.fc1(x)))))


class CWT(nn.Module):
    """G + PW(UP(T(AvgPool2x2(G)))) with a class token; odd maps pool with ceil_mode and crop back."""

    def __init__(self, dim: int = 256, heads: int = 2, mlp_dim: int = 512, dropout: float = 0.1,
                 k: int = 10, knn_backend: str = "auto") -> None:
        super().__init__()
        self.embed = nn.Conv2d(dim, dim, kernel_size=1)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.embed_drop = nn.Dropout(dropout)
        self.block = TransformerBlock(dim, heads, mlp_dim, dropout, k, knn_backend)
        self.up = nn.ConvTranspose2d(dim, dim, kernel_size=2, stride=2, groups=dim, bias=False)
        self.pw = nn.Conv2d(dim, dim, kernel_size=1, bias=False)

    def forward(self, g: torch.Tensor) -> torch.Tensor:
        n, c, h, w = g.shape
        pooled = F.avg_pool2d(g, 2, ceil_mode=True)
        hp, wp = pooled.shape[2:]
        # the 1x1 convs run as matrix products on the token layout (same weights, fewer layout copies)
        t = F.linear(pooled.flatten(2).transpose(1, 2), self.embed.weight.view(c, c), self.embed.bias)
        tokens = torch.cat([self.cls_token.expand(n, -1, -1).to(t.dtype), t], dim=1)
        tokens = self.block(self.embed_drop(tokens))[:, 1:]
        # PW(UP(t)): UP scales channel c by k[c, a, b] into sub-pixel (a, b), so PW o UP is one product with
        # the four matrices W diag(k[:, a, b]) stacked, then a pixel shuffle back to (2*hp, 2*wp)
        fused = self.pw.weight.view(1, c, c) * self.up.weight.view(c, 4).T.unsqueeze(1)  # (4, c_out, c_in)
        y = torch.matmul(tokens, fused.reshape(4 * c, c).T.to(tokens.dtype))  # (N, L, 4*c): [ab, c_out]
        # (N, hp, wp, a, b, c) -> (N, 2hp, 2wp, c), viewed as a channels-last (N, c, 2hp, 2wp) map
        y = y.view(n, hp, wp, 2, 2, c).transpose(2, 3).reshape(n, 2 * hp, 2 * wp, c).permute(0, 3, 1, 2)
        return g + y[:, :, :h, :w]


def _dw3(channels: int) -> nn.Conv2d:
    return nn.Conv2d(channels, channels, kernel_size=3, padding=1, groups=channels, bias=False)


class CWTNet(nn.Module):
    """Local half: ReLU(BN_l(DW(L) + DW'(G))); global half: ReLU(BN_g(DW''(L) + CWT(G)))."""

    def __init__(self, channels: int = 512, heads: int = 2, mlp_ratio: float = 2.0, dropout: float = 0.1,
                 k: int = 10, knn_backend: str = "auto") -> None:
        super().__init__()
        if channels % 2:
            raise ValueError(f"CWTNet needs an even channel count, got {channels}")
        half = channels // 2
        self.half = half
        self.local_dw_l, self.local_dw_g, self.global_dw_l = _dw3(half), _dw3(half), _dw3(half)
        self.cwt = CWT(half, heads, int(math.ceil(half * mlp_ratio)), dropout, k, knn_backend)
        self.bn_local, self.bn_global = nn.BatchNorm2d(half), nn.BatchNorm2d(half)

    @torch.no_grad()
    def reset_to_identity(self) -> None:
        """Start as ReLU(BN(x)) per half: DW = centre tap 1, DW' = DW'' = 0, and CWT(G) = G (PW = 0).

        Every weight still receives gradient (a zero weight's gradient depends on its input, not on itself);
        only the starting point changes: the pretrained conv5 map reaches OptLAD unscrambled by random filters.
        """
        for conv in (self.local_dw_l, self.local_dw_g, self.global_dw_l):
            conv.weight.zero_()
        self.local_dw_l.weight[:, 0, 1, 1] = 1.0
        self.cwt.pw.weight.zero_()

    def _depthwise(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(DW(L) + DW'(G), DW''(L)) of a channels-last map, as two channel-multiplier-1 depthwise convs.

        Multiplier-1 depthwise convolution over a dense channels-last map is the fast case (on CPU about 6x
        faster than NCHW, and than one multiplier-2 conv); channel slices are not dense, so both convs take the
        whole map: [DW | DW'] over [L | G], and [DW'' | 0] over [L | G] (its zero half is discarded).
        """
        h = self.half
        wa = torch.cat([self.local_dw_l.weight, self.local_dw_g.weight]).to(x.dtype)
        wb = torch.cat([self.global_dw_l.weight, torch.zeros_like(self.global_dw_l.weight)]).to(x.dtype)
        a = F.conv2d(x, wa, padding=1, groups=2 * h)
        b = F.conv2d(x, wb, padding=1, groups=2 * h)
        return a[:, :h] + a[:, h:], b[:, :h]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # channels-last throughout: the depthwise convs' fast case, and the CWT's tokens are then plain views
        x = x.contiguous(memory_format=torch.channels_last)
        local_pre, global_dw = self._depthwise(x)
        local_out = F.relu(self.bn_local(local_pre))
        global_out = F.relu(self.bn_global(global_dw + self.cwt(x[:, self.half:])))
        return torch.cat([local_out, global_out], dim=1)
