"""Exact k-nearest-neighbour distance sums over tokens: plain batched torch; knn-cuda only when asked for."""
from __future__ import annotations

import importlib.util

import torch


def _knn_cuda_available(x: torch.Tensor) -> bool:
    return x.is_cuda and importlib.util.find_spec("knn_cuda") is not None


@torch.no_grad()
def knn_sq_dist_sum_torch(tokens: torch.Tensor, k: int) -> torch.Tensor:
    """(N, T, C) -> (N, T): sum of squared Euclidean distances to the k+1 nearest tokens (itself included)."""
    x = tokens.float()
    # squared distances from one batched Gram product; the sum of the k+1 smallest is continuous in them,
    # so rounding that swaps two near-tied neighbours changes the result only by their (tiny) difference
    sq = x.square().sum(-1)
    d2 = torch.baddbmm(sq.unsqueeze(2) + sq.unsqueeze(1), x, x.transpose(1, 2), alpha=-2.0).clamp_min(0)
    # a token's distance to itself is exactly 0 (out of place, so graph exporters see no in-place view write)
    idx = torch.arange(x.shape[1], device=x.device)
    d2 = d2.masked_fill(idx.unsqueeze(1) == idx.unsqueeze(0), 0.0)
    return d2.topk(min(k + 1, x.shape[1]), dim=-1, largest=False).values.sum(-1)


@torch.no_grad()
def knn_sq_dist_sum_cuda_ext(tokens: torch.Tensor, k: int) -> torch.Tensor:
    """The same with the optional knn-cuda extension (reference implementation's KNN)."""
    from knn_cuda import KNN  # optional extra, not on the package index

    x = tokens.float().transpose(1, 2).contiguous()  # knn-cuda takes (N, C, T)
    dist, _ = KNN(k=min(k + 1, x.shape[2]), transpose_mode=False)(x, x)
    return dist.pow(2).sum(1)


def knn_sq_dist_sum(tokens: torch.Tensor, k: int, backend: str = "auto") -> torch.Tensor:
    """Dispatch: 'auto' (the default) and 'torch' run the exact plain-torch KNN on every device, so the result never
    depends on what is installed; 'knn_cuda' runs the optional extension (it must be installed, tensors on CUDA)."""
    if backend not in ("auto", "torch", "knn_cuda"):
        raise ValueError(f"knn backend must be 'auto', 'torch' or 'knn_cuda', got {backend!r}")
    if backend == "knn_cuda" and not _knn_cuda_available(tokens):
        raise RuntimeError("knn backend 'knn_cuda' needs the knn-cuda package and CUDA tensors; use backend='torch'")
    if backend == "knn_cuda":
        return knn_sq_dist_sum_cuda_ext(tokens, k)
    return knn_sq_dist_sum_torch(tokens, k)
