"""A/B timings of CWT and OptLAD changes, interleaved in one process (previous form vs current form).

    python benchmarks/bench_cwt_parts.py [--batch 8] [--repeats 7] [--threads N]

KNN by Gram product vs cdist; the depthwise convs of a CWTNet (three convs, one multiplier-2 grouped conv,
two multiplier-1 convs on a channels-last map); OptLAD in the (N, G, D, L) permuted layout vs the token
layout (N, L, G, D). Every pair is checked to give the same output.
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from clusvpr_plugin.cwt import CWTNet
from clusvpr_plugin.knn import knn_sq_dist_sum_torch
from clusvpr_plugin.naive import reference_form_knn_sums
from clusvpr_plugin.optlad import OptLAD


def depthwise_multiplier2(blk: CWTNet, x: torch.Tensor):
    """The previous form: one grouped conv with two outputs per input channel over the NCHW map."""
    h = blk.half
    zeros = torch.zeros_like(blk.local_dw_g.weight)
    weight = torch.stack([torch.cat([blk.local_dw_l.weight, blk.local_dw_g.weight]),
                          torch.cat([blk.global_dw_l.weight, zeros])], dim=1).view(4 * h, 1, 3, 3)
    out = F.conv2d(x, weight, padding=1, groups=2 * h).view(x.shape[0], 2, h, 2, *x.shape[2:])
    return out[:, 0, :, 0] + out[:, 1, :, 0], out[:, 0, :, 1]


def optlad_permuted(agg: OptLAD, x: torch.Tensor) -> torch.Tensor:
    """The previous OptLAD form (no longer in the package): group vectors permuted to (N, G, D, L), assignment and
    attention there."""
    n, _, h, w = x.shape
    y = agg.linear(F.normalize(x, dim=1).flatten(2).transpose(1, 2))  # (N, L, E*C)
    xg = y.view(n, h * w, agg.groups, agg.cluster_dim).permute(0, 2, 3, 1)  # (N, G, D, L)
    p = agg.p_map(h, w)
    a = torch.sigmoid(xg.clamp(min=agg.eps).pow(p).mean(2).pow(1.0 / p))  # (N, G, L)
    s = F.softmax(torch.matmul(agg.conv.weight.view(agg.num_clusters, agg.cluster_dim), xg), dim=2)  # (N, G, K, L)
    A = (s * a.unsqueeze(2)).transpose(1, 2).reshape(n, agg.num_clusters, -1)
    X = xg.permute(0, 1, 3, 2).reshape(n, -1, agg.cluster_dim)
    return torch.bmm(A, X) - agg.centroids.unsqueeze(0) * A.sum(-1, keepdim=True)


def _median_ms(fns: dict, args: tuple, repeats: int) -> dict:
    times = {k: [] for k in fns}
    with torch.no_grad():
        for _ in range(repeats):
            for name, fn in fns.items():
                t0 = time.perf_counter()
                fn(*args)
                times[name].append(time.perf_counter() - t0)
    return {k: sorted(v)[len(v) // 2] * 1e3 for k, v in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tokens = torch.randn(args.batch, 301, 256)
    a, b = reference_form_knn_sums(tokens, 10), knn_sq_dist_sum_torch(tokens, 10)
    t = _median_ms({"cdist": reference_form_knn_sums, "gram": knn_sq_dist_sum_torch}, (tokens, 10), args.repeats)
    print(f"KNN sums ({args.batch}x301x256): cdist {t['cdist']:.1f} ms, Gram {t['gram']:.1f} ms, "
          f"{t['cdist'] / t['gram']:.1f}x; max rel diff {float(((a - b).abs() / a).max()):.1e}")

    blk = CWTNet(512).eval()
    x = torch.randn(args.batch, 512, 30, 40)

    def separate(x):
        loc, glo = x[:, :256], x[:, 256:]
        return blk.local_dw_l(loc) + blk.local_dw_g(glo), blk.global_dw_l(loc)

    xl = x.contiguous(memory_format=torch.channels_last)
    forms = {"three convs": separate, "multiplier-2 conv": lambda v: depthwise_multiplier2(blk, v),
             "multiplier-1 channels-last": lambda v: blk._depthwise(v.contiguous(memory_format=torch.channels_last))}
    with torch.no_grad():
        ref = separate(x)
        same = all(all(torch.allclose(u, v, atol=1e-5) for u, v in zip(ref, f(x))) for f in forms.values())
    t = _median_ms(forms, (x,), args.repeats)
    print(f"depthwise convs ({args.batch}x512x30x40 NCHW input): " +
          ", ".join(f"{k} {v:.1f} ms" for k, v in t.items()) +
          f"; channels-last vs multiplier-2 {t['multiplier-2 conv'] / t['multiplier-1 channels-last']:.1f}x; "
          f"same output: {same}")

    agg = OptLAD(512, feature_size=(30, 40)).eval()
    with torch.no_grad():
        same = torch.allclose(optlad_permuted(agg, xl), agg.vlad(xl), rtol=1e-4, atol=1e-5)
    t = _median_ms({"permuted": lambda v: optlad_permuted(agg, v), "tokens": agg.vlad}, (xl,), args.repeats)
    print(f"OptLAD vlad ({args.batch}x512x30x40 channels-last): (N,G,D,L) layout {t['permuted']:.1f} ms, token layout "
          f"{t['tokens']:.1f} ms, {t['permuted'] / t['tokens']:.1f}x; same output: {same}")

if __name__ == "__main__":
    main()
