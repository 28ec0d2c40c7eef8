"""A/B timings of CWT and OptLAD changes, interleaved in one process (previous form vs current form).

    python benchmarks/bench_cwt_parts.py --repeats 7 --threads 1 --out benchmarks/aggregator/cwt_parts.json

KNN by Gram product vs cdist; the depthwise convs of a CWTNet (three convs, one multiplier-2 grouped conv,
two multiplier-1 convs on a channels-last map); OptLAD in the (N, G, D, L) permuted layout vs the token
layout (N, L, G, D). Every pair is checked to give the same output. Writes the medians as JSON (--out), the Markdown
table rendered from them beside it (.md), and prints the table.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Callable, Dict

import torch
import torch.nn.functional as F
from _outputs import write_outputs

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


def _part(what: str, forms: Dict[str, str], ms: Dict[str, float], previous: str, current: str, same: bool,
          **extra: Any) -> Dict[str, Any]:
    return {"part": what, "forms": {k: {"label": label, "ms": ms[k]} for k, label in forms.items()},
            "previous": previous, "current": current, "same_output": same, **extra}


def knn_part(batch: int, repeats: int) -> Dict[str, Any]:
    """KNN distance sums over 301 tokens of 256 values: cdist against one batched Gram product."""
    tokens = torch.randn(batch, 301, 256)
    a, b = reference_form_knn_sums(tokens, 10), knn_sq_dist_sum_torch(tokens, 10)
    ms = _median_ms({"cdist": reference_form_knn_sums, "gram": knn_sq_dist_sum_torch}, (tokens, 10), repeats)
    rel = float(((a - b).abs() / a).max())
    return _part(f"KNN distance sums, {batch} x 301 x 256 tokens",
                 {"cdist": "`torch.cdist` without matrix products", "gram": "one batched Gram product"}, ms,
                 "cdist", "gram", rel < 1e-4, max_rel_difference=rel)


def depthwise_part(batch: int, repeats: int) -> Dict[str, Any]:
    """The three depthwise convs of a CWTNet: separate convs, one multiplier-2 grouped conv, two multiplier-1 convs
    on a channels-last map (the conversion from NCHW timed with them)."""
    blk = CWTNet(512).eval()
    x = torch.randn(batch, 512, 30, 40)

    def separate(x):
        loc, glo = x[:, :256], x[:, 256:]
        return blk.local_dw_l(loc) + blk.local_dw_g(glo), blk.global_dw_l(loc)

    fns: Dict[str, Callable] = {
        "three": separate, "multiplier2": lambda v: depthwise_multiplier2(blk, v),
        "channels_last": lambda v: blk._depthwise(v.contiguous(memory_format=torch.channels_last))}
    with torch.no_grad():
        ref = separate(x)
        same = all(all(torch.allclose(u, v, atol=1e-5) for u, v in zip(ref, f(x))) for f in fns.values())
    ms = _median_ms(fns, (x,), repeats)
    return _part(f"the three depthwise convs of a CWTNet, {batch} x 512 x 30 x 40",
                 {"three": "three separate convs (NCHW)", "multiplier2": "one multiplier-2 grouped conv (NCHW)",
                  "channels_last": "two multiplier-1 convs on a channels-last map (conversion from NCHW included)"},
                 ms, "multiplier2", "channels_last", same)


def optlad_part(batch: int, repeats: int) -> Dict[str, Any]:
    """OptLAD's `vlad` on a channels-last map: group vectors permuted to (N, G, D, L) against the token layout."""
    agg = OptLAD(512, feature_size=(30, 40)).eval()
    xl = torch.randn(batch, 512, 30, 40).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        same = torch.allclose(optlad_permuted(agg, xl), agg.vlad(xl), rtol=1e-4, atol=1e-5)
    ms = _median_ms({"permuted": lambda v: optlad_permuted(agg, v), "tokens": agg.vlad}, (xl,), repeats)
    return _part(f"OptLAD `vlad`, {batch} x 512 x 30 x 40",
                 {"permuted": "group vectors permuted to (N, G, D, L)", "tokens": "token layout (N, L, G, D)"}, ms,
                 "permuted", "tokens", bool(same))


def markdown(result: Dict[str, Any]) -> str:
    """One line per part: the previous form and the current one with their medians, the ratio, the output check."""
    lines = [f"{result['cpu']}, torch {result['torch']}, {result['threads']} thread(s), median of "
             f"{result['repeats']} interleaved repeats", "",
             "| part | previous form | current form | ratio | same output |", "|---|---|---|---|---|"]
    for p in result["parts"]:
        prev, cur = p["forms"][p["previous"]], p["forms"][p["current"]]
        lines.append(f"| {p['part']} | {prev['label']}: {prev['ms']:.1f} ms | {cur['label']}: {cur['ms']:.1f} ms | "
                     f"{prev['ms'] / cur['ms']:.1f}x | {p['same_output']} |")
    others = [f"{f['label']}: {f['ms']:.1f} ms" for p in result["parts"] for k, f in p["forms"].items()
              if k not in (p["previous"], p["current"])]
    knn = result["parts"][0]
    lines += ["", f"Also timed: {'; '.join(others)}. Largest relative difference of the Gram-product KNN sums to "
              f"cdist's: {knn['max_rel_difference']:.1e}.", ""]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/aggregator/cwt_parts.json"),
                   help="the JSON of the medians; the Markdown table goes beside it (.md)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from registry.bench import cpu_model

    torch.manual_seed(0)
    parts = [knn_part(args.batch, args.repeats), depthwise_part(args.batch, args.repeats),
             optlad_part(args.batch, args.repeats)]
    result = {"cpu": cpu_model(), "torch": torch.__version__, "threads": torch.get_num_threads(),
              "batch": args.batch, "repeats": args.repeats, "parts": parts}
    write_outputs(result, args.out, markdown)


if __name__ == "__main__":
    main()
