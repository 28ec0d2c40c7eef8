"""Time and peak memory of the ClusVPR aggregator vs the reference's materialised-residual OptLAD, one run, one machine.

    python benchmarks/bench_aggregator.py --batch 8 --repeats 5 [--device cpu|cuda] \
        [--out benchmarks/aggregator/aggregator.json]

Each variant runs in its own subprocess so that peak memory (ru_maxrss on CPU, max_memory_allocated on
CUDA) belongs to that variant alone. The last variant computes the whole aggregator in the reference's
forms (clusvpr_plugin/naive.py: separate NCHW depthwise convs, brute-force KNN distances, explicit
attention, transposed-conv + pointwise upsampling, materialised OptLAD residual) with the same weights.
Writes the results as JSON (--out), the Markdown table rendered from them beside it (.md), and prints the table.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict

from _outputs import write_outputs

VARIANTS = {
    "optlad_matrix": "OptLAD, matrix-product form (this package)",
    "optlad_naive": "OptLAD, materialised N x G x K x D x HW residual (reference form)",
    "aggregator_matrix": "CWT stack + OptLAD matrix form (this package's whole aggregator)",
    "aggregator_naive": "CWT stack + materialised-residual OptLAD",
    "aggregator_reference": "reference-form CWT stack + materialised-residual OptLAD (the reference's forms)",
}
# each comparison: (this package's variant, the variant it is compared with)
COMPARISONS = {"OptLAD aggregation": ("optlad_matrix", "optlad_naive"),
               "whole aggregator vs materialised OptLAD": ("aggregator_matrix", "aggregator_naive"),
               "whole aggregator vs the reference's forms": ("aggregator_matrix", "aggregator_reference")}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run_variant(variant: str, batch: int, repeats: int, device: str, h: int, w: int) -> dict:
    """Build the aggregator, run `repeats` timed forwards after one warm-up, report seconds and peak bytes."""
    import torch

    from clusvpr_plugin.aggregator import ClusVPRAggregator
    from clusvpr_plugin.naive import naive_optlad_vlad, reference_form_aggregator_vlad

    torch.manual_seed(0)
    agg = ClusVPRAggregator(feature_size=(h, w)).eval().to(device)
    x = torch.randn(batch, 512, h, w, device=device)

    def forward():
        if variant == "aggregator_reference":
            return reference_form_aggregator_vlad(agg, x)
        feats = agg.refine(x) if variant.startswith("aggregator") else x
        if variant.endswith("naive"):
            return naive_optlad_vlad(agg.optlad, feats)
        return agg.optlad.vlad(feats)

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    with torch.no_grad():
        forward()
        sync()
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        else:
            base = _rss_bytes()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = forward()
            sync()
            times.append(time.perf_counter() - t0)
    peak = (torch.cuda.max_memory_allocated() if device == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"variant": variant, "seconds": sorted(times)[len(times) // 2], "peak_bytes": peak - base,
            "out_norm": float(out.double().norm()), "threads": torch.get_num_threads()}


def comparisons(rows: Dict[str, Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """Speed-up, memory fraction and output agreement of each comparison in COMPARISONS."""
    out = {}
    for label, (mine, other) in COMPARISONS.items():
        m, n = rows[mine], rows[other]
        out[label] = {"speedup": n["seconds"] / m["seconds"],
                      "memory_fraction": m["peak_bytes"] / max(n["peak_bytes"], 1),
                      "outputs_agree": abs(m["out_norm"] - n["out_norm"]) / n["out_norm"] < 1e-4}
    return out


def markdown(result: Dict[str, Any]) -> str:
    """The table of one run: each variant's median time and peak memory, then each comparison's ratios."""
    lines = [f"{result['device']} ({result['cpu']}), torch {result['torch']}, {result['threads']} thread(s), batch "
             f"{result['batch']}, map {result['size'][0]}x{result['size'][1]}, median of {result['repeats']}", "",
             "| variant | median time (ms) | peak memory (MiB) |", "|---|---|---|"]
    for v, r in result["rows"].items():
        lines.append(f"| {VARIANTS[v]} | {r['seconds'] * 1e3:.1f} | {r['peak_bytes'] / 2**20:.0f} |")
    lines += ["", "| comparison | times faster | peak memory, fraction of the other's | outputs agree |",
              "|---|---|---|---|"]
    for label, c in result["comparisons"].items():
        lines.append(f"| {label} | {c['speedup']:.1f}x | {c['memory_fraction']:.3f} | {c['outputs_agree']} |")
    return "\n".join(lines) + "\n"


def _child(v: str, args: argparse.Namespace) -> Dict[str, Any]:
    cmd = [sys.executable, __file__, "--variant", v, "--batch", str(args.batch), "--repeats", str(args.repeats),
           "--device", args.device, "--size", *map(str, args.size)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8, help="feature maps per forward (default 8)")
    parser.add_argument("--repeats", type=int, default=5, help="timed forwards per variant; the median is reported")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--size", type=int, nargs=2, default=(30, 40), metavar=("H", "W"), help="feature map size")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/aggregator/aggregator.json"),
                        help="the JSON of the results; the Markdown table goes beside it (.md)")
    parser.add_argument("--variant", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:  # child process: one variant
        print(json.dumps(run_variant(args.variant, args.batch, args.repeats, args.device, *args.size)))
        return
    import torch

    from registry.bench import cpu_model

    rows = {v: _child(v, args) for v in VARIANTS}
    result = {"device": args.device, "cpu": cpu_model(), "torch": torch.__version__,
              "threads": rows["optlad_matrix"]["threads"], "batch": args.batch,
              "size": list(args.size), "repeats": args.repeats, "rows": rows, "comparisons": comparisons(rows)}
    write_outputs(result, args.out, markdown)


if __name__ == "__main__":
    main()
