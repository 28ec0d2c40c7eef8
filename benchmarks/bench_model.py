"""Full-model encoding speed and peak memory (ClusVPR at 480x640 by default), all variants in one run.

    python benchmarks/bench_model.py --device cuda --batch 32 --iters 20 --compile --out benchmarks/gpu/model.json

Variants: `reference_form` (float32, OptLAD with the materialised residual as in the reference code),
`fp32` (this package, float32), `bf16_cl` (bfloat16 autocast + channels_last: the inference path of
`VPRModel.encode`), `bf16_cl_compile` (the same under torch.compile, with --compile), and `vgg16_only`
(the backbone alone in bf16 channels_last: the ceiling). Also checks that bf16 descriptors agree with fp32.
Writes the results as JSON (--out) and the Markdown table rendered from them beside it (.md).
"""
from __future__ import annotations

import argparse
import contextlib
import time
from functools import partial
from pathlib import Path
from typing import Any, Dict

import torch
from _outputs import write_outputs


def markdown(result: Dict[str, Any]) -> str:
    """One line per variant: images/s, ms per batch, peak memory and the cosine of its descriptors to fp32's."""
    a = result["args"]
    lines = [f"{a['model']} on {result['device']}, torch {result['torch']}, batch {a['batch']}, input "
             f"{a['size'][0]}x{a['size'][1]}, {a['iters']} timed batches per variant", "",
             "| variant | images/s | ms per batch | peak GiB | min cosine vs fp32 |", "|---|---|---|---|---|"]
    for v, r in result["results"].items():
        cos = r.get("min_cosine_vs_fp32")
        peak = "-" if r["peak_gib"] != r["peak_gib"] else f"{r['peak_gib']:.2f}"  # NaN: not measured on the CPU
        lines.append(f"| {v} | {r['images_per_s']:.1f} | {r['ms_per_batch']:.1f} | {peak} | "
                     f"{'-' if cos is None else format(cos, '.5f')} |")
    return "\n".join(lines) + "\n"


def _timeit(fn, iters: int, device: str) -> float:
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    fn()
    fn()
    sync()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    sync()
    return (time.perf_counter() - t0) / iters


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="clusvpr_vgg16", help="registry name (default clusvpr_vgg16)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--size", type=int, nargs=2, default=(480, 640), metavar=("H", "W"))
    p.add_argument("--iters", type=int, default=20, help="timed batches per variant")
    p.add_argument("--compile", action="store_true", help="also time torch.compile")
    p.add_argument("--variants", default="reference_form,fp32,bf16_cl,vgg16_only",
                   help="comma-separated subset to run")
    p.add_argument("--out", type=Path, default=Path("benchmarks/gpu/model.json"),
                   help="the JSON of the results; the Markdown table goes beside it (.md)")
    args = p.parse_args()

    import registry
    from clusvpr_plugin.naive import naive_optlad_vlad

    dev = args.device
    x = torch.randn(args.batch, 3, *args.size, device=dev)
    variants = args.variants.split(",") + (["bf16_cl_compile"] if args.compile else [])
    results, descs = {}, {}
    for v in variants:
        torch.manual_seed(0)  # identical weights in every variant, so descriptors can be compared
        model = registry.create(args.model, input_size=tuple(args.size)).eval().to(dev)
        if v == "reference_form":
            model.aggregator.optlad.vlad = partial(naive_optlad_vlad, model.aggregator.optlad)
        amp = v.startswith("bf16") or v == "vgg16_only"
        if amp and dev == "cuda":
            model = model.to(memory_format=torch.channels_last)
        net = model.backbone if v == "vgg16_only" else model
        if v.endswith("compile"):
            net = torch.compile(net)
        inp = x.contiguous(memory_format=torch.channels_last) if amp and dev == "cuda" else x
        ctx = (lambda: torch.autocast(dev, dtype=torch.bfloat16)) if amp else contextlib.nullcontext

        def run(net=net, inp=inp, ctx=ctx):
            with torch.no_grad(), ctx():
                return net(inp)

        if dev == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        sec = _timeit(run, args.iters, dev)
        peak = torch.cuda.max_memory_allocated() / 2**30 if dev == "cuda" else float("nan")
        if v != "vgg16_only":
            descs[v] = run().float()
        results[v] = {"images_per_s": args.batch / sec, "ms_per_batch": sec * 1e3, "peak_gib": peak}
        print(f"{v:16s} {args.batch / sec:8.1f} img/s  {sec * 1e3:8.1f} ms/batch  peak {peak:.2f} GiB", flush=True)
        del model, net
    if "fp32" in descs:
        for v, d in descs.items():
            cos = torch.nn.functional.cosine_similarity(d, descs["fp32"], dim=1)
            results[v]["min_cosine_vs_fp32"] = float(cos.min())
            print(f"{v:16s} min cosine vs fp32 descriptors: {float(cos.min()):.5f}")
    name = torch.cuda.get_device_name() if dev == "cuda" else "cpu"
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    write_outputs({"device": name, "torch": torch.__version__, "args": settings, "results": results}, args.out,
                  markdown)


if __name__ == "__main__":
    main()
