"""A/B timings of two CWT changes, interleaved in one process: KNN by Gram product vs cdist, fused depthwise convs.

    python benchmarks/bench_cwt_parts.py [--batch 8] [--repeats 7]
"""
from __future__ import annotations

import argparse
import time

import torch

from clusvpr_plugin.cwt import CWTNet
from clusvpr_plugin.knn import knn_sq_dist_sum_torch


def knn_by_cdist(x: torch.Tensor, k: int) -> torch.Tensor:
    """The previous form: exact pairwise distances without the matrix-product expansion."""
    d = torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist")
    return d.topk(k + 1, dim=-1, largest=False).values.pow(2).sum(-1)


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
    args = p.parse_args()
    torch.manual_seed(0)
    tokens = torch.randn(args.batch, 301, 256)
    a, b = knn_by_cdist(tokens, 10), knn_sq_dist_sum_torch(tokens, 10)
    t = _median_ms({"cdist": knn_by_cdist, "gram": knn_sq_dist_sum_torch}, (tokens, 10), args.repeats)
    print(f"KNN sums ({args.batch}x301x256): cdist {t['cdist']:.1f} ms, Gram {t['gram']:.1f} ms, "
          f"{t['cdist'] / t['gram']:.1f}x; max rel diff {float(((a - b).abs() / a).max()):.1e}")

    blk = CWTNet(512).eval()
    x = torch.randn(args.batch, 512, 30, 40)

    def separate(x):
        loc, glo = x[:, :256], x[:, 256:]
        return blk.local_dw_l(loc) + blk.local_dw_g(glo), blk.global_dw_l(loc)

    with torch.no_grad():
        same = all(torch.allclose(u, v, atol=1e-6) for u, v in zip(separate(x), blk._depthwise(x)))
    t = _median_ms({"separate": separate, "fused": blk._depthwise}, (x,), args.repeats)
    print(f"depthwise convs ({args.batch}x512x30x40): three convs {t['separate']:.1f} ms, one grouped conv "
          f"{t['fused']:.1f} ms, {t['separate'] / t['fused']:.1f}x; same output: {same}")


if __name__ == "__main__":
    main()
