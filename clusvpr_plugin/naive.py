"""OptLAD in the reference's materialised-residual form (N x G x K x D x HW): a slow yardstick for tests and benchmarks."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .optlad import OptLAD


def naive_optlad_vlad(agg: OptLAD, x: torch.Tensor) -> torch.Tensor:
    """Un-normalised OptLAD (N, K, D) computed by building every residual x_g(l) - c_k explicitly."""
    n, _, h, w = x.shape
    g, d, k = agg.groups, agg.cluster_dim, agg.num_clusters
    y = torch.einsum("oc,nchw->nohw", agg.linear.weight.to(x.dtype), F.normalize(x, dim=1))
    xg = y.reshape(n, g, d, h * w)
    p = agg.p_map(h, w).to(x.dtype)
    att = torch.sigmoid(xg.clamp(min=agg.eps).pow(p).mean(2).pow(1.0 / p))  # N, G, L
    logits = torch.einsum("kd,ngdl->ngkl", agg.conv.weight.view(k, d).to(x.dtype), xg)
    s = torch.softmax(logits, dim=2)  # N, G, K, L
    resid = xg.unsqueeze(2) - agg.centroids.to(x.dtype)[None, None, :, :, None]  # N, G, K, D, L
    resid = resid * (s * att.unsqueeze(2)).unsqueeze(3)
    return resid.sum(-1).sum(1)
