"""OptLAD in the reference's materialised-residual form (N x G x K x D x HW): a slow yardstick for tests, benchmarks."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .cwt import weights_from_knn_sums
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


@torch.no_grad()
def reference_form_knn_sums(tokens: torch.Tensor, k: int) -> torch.Tensor:
    """KNN squared-distance sums from brute-force pairwise distances (no matrix-product expansion), as a KNN
    kernel computes them."""
    d = torch.cdist(tokens, tokens, compute_mode="donot_use_mm_for_euclid_dist")
    return d.topk(min(k + 1, tokens.shape[1]), dim=-1, largest=False).values.pow(2).sum(-1)


def reference_form_cluster_weights(tokens: torch.Tensor, k: int) -> torch.Tensor:
    """Cluster weights from the brute-force KNN sums."""
    return weights_from_knn_sums(reference_form_knn_sums(tokens, k), k)


def reference_form_cwtnet(blk, x: torch.Tensor) -> torch.Tensor:
    """One CWTNet block computed op by op as the reference structures it (eval mode), with `blk`'s weights.

    NCHW throughout: three separate depthwise convs on channel slices, the 1x1 embedding as a convolution,
    tokens transposed out and back, explicit softmax attention, cluster weights from brute-force distances,
    the transposed-conv upsampling and the pointwise conv as two separate layers.
    """
    h = blk.half
    L, G = x[:, :h], x[:, h:]
    local = F.relu(blk.bn_local(blk.local_dw_l(L) + blk.local_dw_g(G)))
    cwt = blk.cwt
    n, c, hh, ww = G.shape
    pooled = F.avg_pool2d(G, 2, ceil_mode=True)
    hp, wp = pooled.shape[2:]
    t = cwt.embed(pooled).flatten(2).transpose(1, 2)
    t = torch.cat([cwt.cls_token.expand(n, -1, -1), t], dim=1)
    attn = cwt.block.attn
    w = reference_form_cluster_weights(t, attn.k)
    q, k_, v = attn.query(t), attn.key(t), attn.value(t) * (0.5 + w).unsqueeze(-1)
    split = lambda z: z.view(n, -1, attn.heads, c // attn.heads).transpose(1, 2)  # noqa: E731
    q, k_, v = split(q), split(k_), split(v)
    scores = torch.softmax(q @ k_.transpose(-2, -1) / (c // attn.heads) ** 0.5, dim=-1)
    t = t + attn.out((scores @ v).transpose(1, 2).reshape(n, -1, c))
    t = t + cwt.block.fc2(F.gelu(cwt.block.fc1(t)))
    y = t[:, 1:].transpose(1, 2).reshape(n, c, hp, wp)
    y = cwt.pw(cwt.up(y))[:, :, :hh, :ww]
    glob = F.relu(blk.bn_global(blk.global_dw_l(L) + G + y))
    return torch.cat([local, glob], dim=1)


def reference_form_aggregator_vlad(agg, x: torch.Tensor) -> torch.Tensor:
    """The whole aggregator as the reference computes it: reference-form CWT blocks, materialised OptLAD."""
    for blk in agg.cwt:
        x = reference_form_cwtnet(blk, x)
    return naive_optlad_vlad(agg.optlad, x)
