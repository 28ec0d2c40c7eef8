"""onnxruntime against PyTorch on the CPU: images/s of every registry model, both runtimes in one run.

    python benchmarks/bench_onnx.py --size 192 256 --batch 1 4 --threads 1 --out benchmarks/onnx/onnx.json

Each model is built with random weights and, where it has one, a fitted (random) whitening, so the whole
release graph runs (ClusVPR's exact KNN and OptLAD included); it is exported with `registry.export_onnx`,
then both runtimes encode the same float32 batches with the same number of threads (their outputs are
compared: the table's last column is the relative difference). Timing alternates between the runtimes in
rounds, so load that changes during the run (other jobs on the machine) falls on both alike. Prints a
markdown table: images/s of each runtime and their ratio, and writes the results as JSON (--out) with the table
rendered from them beside it (.md). About two minutes with the defaults on one core.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

import torch
from _outputs import write_outputs

from registry.bench import cpu_model

DEFAULT_MODELS = ("clusvpr_vgg16", "netvlad_vgg16", "gem_vgg16", "gem_resnet50")


def _with_fitted_whitening(model):
    """Install random whitening parameters (speed does not depend on their values)."""
    w = model.whitening
    if w is not None and not w.fitted:
        g = torch.Generator().manual_seed(0)
        w.set_params(torch.randn(w.in_dim, w.out_dim, generator=g) / w.in_dim ** 0.5, torch.ones(w.out_dim),
                     torch.zeros(w.in_dim))
    return model


def _rate(fn: Callable[[], object], batch: int, seconds: float) -> float:
    """Images per second of `fn` (one batch per call) over at least `seconds` (and at least one call)."""
    calls, t0 = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            return calls * batch / elapsed


def bench(name: str, size, batches: List[int], threads: int, seconds: float, rounds: int, workdir: Path) -> List[Dict]:
    import registry
    from registry.export import onnx_session, relative_error

    torch.manual_seed(0)
    model = _with_fitted_whitening(registry.create(name, input_size=tuple(size))).eval()
    path = registry.export_onnx(model, workdir / f"{name}.onnx", input_size=tuple(size), verify=False)
    session = onnx_session(path, threads=threads)
    rows = []
    for batch in batches:
        x = torch.randn(batch, 3, *size)
        xn = x.numpy()

        def run_torch():
            with torch.inference_mode():
                return model(x)

        def run_ort():
            return session.run(["descriptors"], {"images": xn})

        # warm-up (allocations, ORT's first-run planning), and the check that both give the same descriptors
        err = relative_error(torch.from_numpy(run_ort()[0]), run_torch())
        torch_rates, ort_rates = [], []
        for _ in range(rounds):
            torch_rates.append(_rate(run_torch, batch, seconds / rounds))
            ort_rates.append(_rate(run_ort, batch, seconds / rounds))
        pt, ort = sum(torch_rates) / rounds, sum(ort_rates) / rounds
        rows.append({"model": name, "batch": batch, "size": list(size), "torch_img_s": pt, "ort_img_s": ort,
                     "ratio": ort / pt, "relative_error": err, "descriptor_dim": model.descriptor_dim})
        print(_line(rows[-1]), flush=True)
    return rows


HEADER = ("| model | input (HxW) | batch | PyTorch img/s | onnxruntime img/s | ORT / PyTorch | rel. difference |\n"
          "|---|---|---|---|---|---|---|")


def _line(r: Dict[str, Any]) -> str:
    return (f"| {r['model']} | {r['size'][0]}x{r['size'][1]} | {r['batch']} | {r['torch_img_s']:.2f} | "
            f"{r['ort_img_s']:.2f} | {r['ratio']:.2f} | {r['relative_error']:.1e} |")


def markdown(result: Dict[str, Any]) -> str:
    """The run's table: images/s of both runtimes, their ratio and the descriptors' relative difference."""
    return "\n".join([f"CPU: {result['cpu']}, {result['threads']} thread(s); torch {result['torch']}, onnxruntime "
                      f"{result['onnxruntime']}; float32, random weights", "", HEADER,
                      *(_line(r) for r in result["rows"]), ""])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated registry names")
    p.add_argument("--size", type=int, nargs=2, default=(192, 256), metavar=("H", "W"))
    p.add_argument("--batch", type=int, nargs="+", default=[1, 4], help="batch sizes to time")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads for both runtimes (default 1)")
    p.add_argument("--seconds", type=float, default=3.0, help="timed seconds per model, batch and runtime")
    p.add_argument("--rounds", type=int, default=3, help="alternations between the runtimes")
    p.add_argument("--out", type=Path, default=Path("benchmarks/onnx/onnx.json"),
                   help="the JSON of the results; the Markdown table goes beside it (.md)")
    args = p.parse_args()

    import onnxruntime

    torch.set_num_threads(args.threads)
    print(f"CPU: {cpu_model()}, {args.threads} thread(s); torch {torch.__version__}, onnxruntime "
          f"{onnxruntime.__version__}; float32, random weights\n")
    print(HEADER)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            rows += bench(name, args.size, args.batch, args.threads, args.seconds, args.rounds, Path(tmp))
    write_outputs({"cpu": cpu_model(), "threads": args.threads, "torch": torch.__version__,
                   "onnxruntime": onnxruntime.__version__, "seconds": args.seconds, "rounds": args.rounds,
                   "rows": rows}, args.out, markdown)


if __name__ == "__main__":
    main()
