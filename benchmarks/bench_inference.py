"""Inference runtimes side by side on the CPU: speed, recall and the machine's limit, for the three releases.

    python benchmarks/bench_inference.py --part recall --out bench_out     # Recall@1/5/10 per runtime (untimed)
    python benchmarks/bench_inference.py --part speed --out bench_out      # images/s, latency, GEMM peaks, profile
    python benchmarks/bench_inference.py --part report --out bench_out     # markdown tables + the plot

int8's choices (calibration, which convolutions stay float32) are measured on the validation places by
benchmarks/bench_int8_levers.py.

Runtimes: `registry.compile_for(model, runtime)` for torch (eager float32, the reference), compile (torch.compile,
channels_last), onnx (onnxruntime float32) and onnx-int8 (the backbone's convolutions static int8, calibrated on 32
Nordland *training* images, 16 summer + 16 winter from places 1..1600: none of them is a test image).

recall: each runtime encodes the embedded Nordland test places (400 winter queries, 400 summer images) and the
Corridor (111 / 111) at the release's own input size (96x192); Recall@1/5/10 with exact search, and each image's
cosine similarity to the eager descriptors (mean and worst). Descriptors are cached in --out/cache.

speed (under an exclusive flock on /tmp/vpr-bench.lock, so two timed runs on this machine never overlap): the
peak float32 and int8 GEMM throughput at 1 and 2 threads (gemm_peaks: large products, best of several int8 paths);
then per release and input size, images/s at batch 16 and batch-1 latency at 1 and 2 threads, the runtimes
interleaved in rounds so load that changes falls on all of them alike. At 480x640 a few batches only: batch 16 at
2 threads once per runtime (after a batch-1 warm-up), batch-1 latency once at 2 threads, and no compile (each
new shape compiles for minutes here; --big-runtimes adds it). Achieved fraction of the machine's peak = counted
FLOPs per image (FlopCounterMode, the runner's GFLOPs) x images/s / peak GEMM (int8 runtime: / the int8 peak).
A profile of ClusVPR at the first size, batch 16, 2 threads: the top operators of each runtime.
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from _outputs import write_text_atomic

import registry
from registry.bench.metrics import count_gflops
from registry.bench.runner import cpu_model
from registry.datasets import load_dataset
from registry.datasets.images import open_rgb
from registry.evaluation import Preprocess, recall_at_n

RELEASES = ("clusvpr_vgg16.nordland", "netvlad_vgg16.nordland", "gem_vgg16.nordland")
DATASETS = ("nordland_test", "corridor")
NS = (1, 5, 10)
LOCK = "/tmp/vpr-bench.lock"
CALIBRATION_IMAGES = 32
SHARED_NORDLAND = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "nordland"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def calibration_files(root: Path, n: int = CALIBRATION_IMAGES) -> List[Path]:
    """n Nordland training images (places 1..1600), half summer half winter, spread evenly over the places."""
    places = np.linspace(1, 1600, n // 2).round().astype(int)
    files = [root / season / f"images-{10 * p:05d}.png" for season in ("summer", "winter") for p in places]
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise SystemExit(f"calibration images missing, e.g. {missing[0]}: pass --nordland-root (the Nordland "
                         "folder with summer/ and winter/ images-XXXXX.png)")
    return files


def load_images(paths: Sequence, input_config: Dict[str, Any], size=None) -> torch.Tensor:
    cfg = dict(input_config)
    if size is not None:
        cfg["input_size"] = (3, *size)
    pre = Preprocess(cfg)
    return torch.stack([pre(open_rgb(p)) for p in paths])


def encode_all(rt, x: torch.Tensor, batch: int = 16) -> np.ndarray:
    """Descriptors of x in batches of `batch`; the last batch is padded to full size (no new shape to compile)."""
    out = []
    for i in range(0, len(x), batch):
        chunk = x[i:i + batch]
        n = len(chunk)
        if n < batch:
            chunk = torch.cat([chunk, chunk[:1].expand(batch - n, *chunk.shape[1:])])
        out.append(rt.encode(chunk)[:n].numpy())
    return np.concatenate(out)


def build(model, runtime: str, calibration: Optional[torch.Tensor], threads: int):
    """The runtime `runtime`; 'onnx-int8:I:J...' is onnx-int8 with the backbone's convolutions I, J... kept float32
    (int8_float_convs; plain 'onnx-int8' is the library's default)."""
    torch.set_num_threads(threads)
    start = time.perf_counter()
    kind, *floats = runtime.split(":")
    extra = {"int8_float_convs": tuple(int(i) for i in floats)} if floats else {}
    rt = registry.compile_for(model, kind, calibration=calibration if kind == "onnx-int8" else None,
                              threads=threads, **extra)
    return rt, time.perf_counter() - start


# ---------------------------------------------------------------------------------------------------- recall
def part_recall(args) -> None:
    out = Path(args.out)
    cache = out / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    root = Path(args.nordland_root)
    datasets = {name: load_dataset(name, data_root=root.parent) if name == "nordland_val" else load_dataset(name)
                for name in args.datasets}
    calib_paths = calibration_files(root, args.calibration_images)
    results = json.loads((out / "recall.json").read_text()) if (out / "recall.json").exists() else {}
    for release in args.models:
        model = registry.create(release, pretrained=True).eval()
        calib = load_images(calib_paths, model.input_config)
        ref: Dict[str, np.ndarray] = {}
        for runtime in args.runtimes:
            key = f"{release}/{runtime}"
            rt = None
            row: Dict[str, Any] = {"model": release, "runtime": runtime,
                                   "input_size": "x".join(map(str, model.input_config["input_size"][1:]))}
            for ds_name, ds in datasets.items():
                path = cache / f"{release}__{runtime}__{ds_name}.npz"
                if path.exists():
                    q, db = (np.load(path)[k] for k in ("q", "db"))
                else:
                    if rt is None:
                        rt, build_s = build(model, runtime, calib, args.threads)
                        row["build_s"] = round(build_s, 1)
                        if getattr(rt, "calibration", None):
                            row["calibration"] = rt.calibration
                    log(f"{key} on {ds_name}: encoding {ds.num_queries + ds.num_db} images")
                    start = time.perf_counter()
                    db = encode_all(rt, load_images(ds.db_images, model.input_config))
                    q = encode_all(rt, load_images(ds.q_images, model.input_config))
                    row[f"{ds_name}_encode_s"] = round(time.perf_counter() - start, 1)
                    np.savez(path, q=q, db=db)
                r = recall_at_n(q, db, ds.positives, NS, "flat", ds.ignore)["recall"]
                row[ds_name] = {str(n): float(r[n]) for n in NS}
                both = np.concatenate([q, db])
                if runtime == "torch":
                    ref[ds_name] = both
                elif ds_name in ref:
                    cos = (F.normalize(torch.from_numpy(both).double(), dim=-1)
                           * F.normalize(torch.from_numpy(ref[ds_name]).double(), dim=-1)).sum(-1)
                    row[f"{ds_name}_cosine"] = {"mean": float(cos.mean()), "min": float(cos.min())}
            old = results.get(key, {})
            results[key] = {**old, **row}  # rows of other datasets (an earlier --datasets) are kept
            log(f"{key}: " + ", ".join(f"{d} R@1 {row[d]['1']:.2f}" for d in args.datasets))
            write_text_atomic(out / "recall.json", json.dumps(results, indent=1))
            del rt


# ----------------------------------------------------------------------------------------------------- speed
@contextlib.contextmanager
def exclusive(lock: str):
    with open(lock, "a") as fh:
        log(f"waiting for {lock} ...")
        fcntl.flock(fh, fcntl.LOCK_EX)
        log("lock held: timing")
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def gemm_peaks(threads: Sequence[int], sizes: Sequence[int] = (2048, 4096), seconds: float = 2.0) -> Dict[str, Any]:
    """Peak throughput of a large product (2 n^3 operations), best over n in `sizes`: float32 (GFLOP/s) as the best of
    torch.mm and onnxruntime MatMul (MLAS; torch.mm's BLAS reaches less on this AMD CPU), and
    int8 (GOP/s) as the best of onnxruntime MatMulInteger (uint8 x constant int8 -> int32), QLinearMatMul and torch's
    quantized Linear (fbgemm), since the three int8 paths reach different fractions of the hardware."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    out: Dict[str, Any] = {}
    for t in threads:
        torch.set_num_threads(t)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = t, 1
        found: Dict[str, float] = {}
        for n in sizes:
            a8, b8 = rng.integers(0, 255, (n, n), dtype=np.uint8), rng.integers(-127, 127, (n, n), dtype=np.int8)
            scalars = [numpy_helper.from_array(np.array(v, dtype), name) for v, dtype, name in
                       ((0.01, np.float32, "sa"), (128, np.uint8, "za"), (0.01, np.float32, "sb"), (0, np.int8, "zb"),
                        (1.0, np.float32, "sy"), (128, np.uint8, "zy"))]
            for op, inputs, out_type in (("MatMulInteger", ["a", "b"], TensorProto.INT32),
                                         ("QLinearMatMul", ["a", "sa", "za", "b", "sb", "zb", "sy", "zy"],
                                          TensorProto.UINT8)):
                graph = helper.make_graph([helper.make_node(op, inputs, ["c"])], op,
                                          [helper.make_tensor_value_info("a", TensorProto.UINT8, [n, n])],
                                          [helper.make_tensor_value_info("c", out_type, [n, n])],
                                          initializer=[numpy_helper.from_array(b8, "b")] + scalars)
                proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
                sess = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
                found[f"ort {op} {n}"] = _rate(lambda: sess.run(None, {"a": a8}), seconds) * 2 * n ** 3 / 1e9
            qlin = torch.ao.nn.quantized.Linear(n, n, bias_=False)
            qlin.set_weight_bias(torch.quantize_per_tensor(torch.randn(n, n) * 0.01, 0.01, 0, torch.qint8), None)
            qx = torch.quantize_per_tensor(torch.randn(n, n), 0.05, 128, torch.quint8)
            found[f"torch quantized Linear {n}"] = _rate(lambda: qlin(qx), seconds) * 2 * n ** 3 / 1e9
            a, b = torch.randn(n, n), torch.randn(n, n)
            found[f"fp32 torch.mm {n}"] = _rate(lambda: torch.mm(a, b), seconds) * 2 * n ** 3 / 1e9
            graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "fp32",
                                      [helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n])],
                                      [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])],
                                      initializer=[numpy_helper.from_array(b.numpy(), "b")])
            proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
            sess = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
            an = a.numpy()
            found[f"fp32 ort MatMul {n}"] = _rate(lambda: sess.run(None, {"a": an}), seconds) * 2 * n ** 3 / 1e9
        fp32 = max(v for k, v in found.items() if k.startswith("fp32"))
        int8 = max(v for k, v in found.items() if not k.startswith("fp32"))
        out[str(t)] = {"fp32_gflops": fp32, "int8_gops": int8, "all": found}
        log(f"GEMM peaks, {t} thread(s): float32 {fp32:.0f} GFLOP/s, int8 {int8:.0f} GOP/s ({found})")
    return out


def _rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls per second over at least `seconds` (and one call), after one warm-up call."""
    fn()
    return 1 / _time_calls(fn, None, seconds)


def _latency(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def _rethreaded(rt, threads: int):
    """The same runtime with `threads` threads (onnxruntime: a new session over the same graph)."""
    torch.set_num_threads(threads)
    if isinstance(rt, registry.runtimes.OnnxRuntime):
        return registry.runtimes.OnnxRuntime(rt.graph, threads=threads)
    return rt


def time_size(release: str, size, runtimes: Sequence[str], calib_paths, images: Sequence, args,
              big: bool) -> List[Dict]:
    model = registry.create(release, pretrained=True).eval()
    model.input_config = {**model.input_config, "input_size": (3, *size)}
    calib = load_images(calib_paths, model.input_config)
    x16 = load_images(images[:16], model.input_config)
    x1 = x16[:1]
    gflops = count_gflops(model, x1)
    backbone_gflops = count_gflops(model.backbone, x1)
    built = {}
    for runtime in runtimes:
        rt, seconds = build(model, runtime, calib, 2)
        built[runtime] = rt
        log(f"{release} {size[0]}x{size[1]} {runtime}: built in {seconds:.0f} s")
    rows = []
    plan = [(2, 16), (2, 1)] if big else [(t, b) for t in args.threads_list for b in (1, 16)]
    for threads, batch in plan:
        rts = {name: _rethreaded(rt, threads) for name, rt in built.items()}
        x = x16 if batch == 16 else x1
        for rt in rts.values():  # warm-up: allocations, onnxruntime's first-run planning, compile of this shape
            rt.encode(x1 if big else x)
        rates: Dict[str, List[float]] = {name: [] for name in rts}
        lat: Dict[str, List[float]] = {name: [] for name in rts}
        for _ in range(1 if big else args.rounds):
            for name, rt in rts.items():
                if batch == 1:
                    lat[name].append(_latency(lambda: rt.encode(x), 1 if big else 3))
                    rates[name].append(1e3 / lat[name][-1])
                else:
                    rates[name].append(16 / _time_calls(lambda: rt.encode(x), 1 if big else None, args.seconds))
        for name in rts:
            ips = float(np.mean(rates[name]))
            rows.append({"model": release, "size": f"{size[0]}x{size[1]}", "runtime": name, "threads": threads,
                         "batch": batch, "images_per_s": ips,
                         "latency_ms": float(np.median(lat[name])) if lat[name] else None,
                         "gflops_per_image": gflops, "backbone_gflops": backbone_gflops,
                         "rounds": len(rates[name])})
            log(f"  {release} {size[0]}x{size[1]} {name} {threads}t b{batch}: {ips:.2f} img/s")
    return rows


def _time_calls(fn: Callable[[], object], calls: Optional[int], seconds: float) -> float:
    """Seconds per call: exactly `calls` calls, or as many as fit in `seconds` (at least one)."""
    n, start = 0, time.perf_counter()
    while (calls is not None and n < calls) or (calls is None and (n == 0 or time.perf_counter() - start < seconds)):
        fn()
        n += 1
    return (time.perf_counter() - start) / n


def profile(release: str, size, calib_paths, images, folder: Path, top: int = 8) -> Dict[str, Any]:
    """Top operators (share of operator time) of eager PyTorch (torch.profiler) and of onnxruntime float32 / int8
    (its own profiler, the second of two runs), batch 16, 2 threads."""
    import onnxruntime as ort

    model = registry.create(release, pretrained=True).eval()
    model.input_config = {**model.input_config, "input_size": (3, *size)}
    x = load_images(images[:16], model.input_config)
    torch.set_num_threads(2)
    with torch.inference_mode(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        model(x)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    out: Dict[str, Any] = {"torch": [(e.key, e.self_cpu_time_total / total) for e in events[:top]]}
    calib = load_images(calib_paths, model.input_config)
    for runtime in ("onnx", "onnx-int8"):
        rt = registry.compile_for(model, runtime, calibration=calib if runtime == "onnx-int8" else None, threads=2)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = 2, 1
        opts.enable_profiling = True
        opts.profile_file_prefix = str(folder / f"ort_profile_{runtime}")
        sess = ort.InferenceSession(rt.graph, opts, providers=["CPUExecutionProvider"])
        for _ in range(2):
            sess.run(None, {"images": x.numpy()})
        trace = json.loads(Path(sess.end_profiling()).read_text())
        last_run = max(e["ts"] for e in trace if e.get("name") == "model_run")
        by_op: Dict[str, float] = {}
        for e in trace:
            if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time") and e["ts"] >= last_run:
                op = e.get("args", {}).get("op_name", "?")
                by_op[op] = by_op.get(op, 0.0) + e["dur"]
        total = sum(by_op.values())
        out[runtime] = sorted(((k, v / total) for k, v in by_op.items()), key=lambda kv: -kv[1])[:top]
    return out


def part_speed(args) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    calib_paths = calibration_files(Path(args.nordland_root), args.calibration_images)
    images = load_dataset("nordland_test").db_images[:16]
    result: Dict[str, Any] = {"cpu": cpu_model(), "torch": torch.__version__, "onnxruntime": _ort_version(),
                              "command": " ".join(sys.argv), "date": time.strftime("%Y-%m-%d %H:%M %Z")}
    with exclusive(args.lock):
        start = time.perf_counter()
        result["gemm"] = gemm_peaks(args.threads_list)
        result["rows"] = []
        for release in args.models:
            for size in args.sizes:
                big = size[0] * size[1] > 200 * 300
                if big and args.big_models and release not in args.big_models:
                    continue
                runtimes = args.big_runtimes if big else args.runtimes
                result["rows"] += time_size(release, size, runtimes, calib_paths, images, args, big)
                write_text_atomic(out / "speed.json", json.dumps(result, indent=1))
        if args.profile:
            small = args.sizes[0]  # profiled at the first (small) size only: eager at 480x640 takes minutes
            result["profile"] = {f"{small[0]}x{small[1]}": profile(args.models[0], small, calib_paths, images, out)}
        result["elapsed_s"] = round(time.perf_counter() - start)
    write_text_atomic(out / "speed.json", json.dumps(result, indent=1))


def part_gemm(args) -> None:
    """The GEMM peaks again, under the lock, merged into speed.json as the best of both measurements (the machine's
    peak is the best it reached; a load that changed between the GEMM and the models lowers one of them)."""
    out = Path(args.out) / "speed.json"
    result = json.loads(out.read_text())
    with exclusive(args.lock):
        again = gemm_peaks(args.threads_list)
    result.setdefault("gemm_runs", [result["gemm"]]).append(again)
    for t, peaks in again.items():
        best = result["gemm"].setdefault(t, peaks)
        for key in ("fp32_gflops", "int8_gops"):
            best[key] = max(best[key], peaks[key])
    write_text_atomic(out, json.dumps(result, indent=1))


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


# ------------------------------------------------------------------------------------------------------- gpu
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _gpu_variants(model, x: torch.Tensor, device: torch.device) -> Dict[str, Callable[[], torch.Tensor]]:
    """The accelerator paths of one model: float32, bfloat16 autocast and float16 weights (channels_last), compiled
    bfloat16, and onnxruntime's CUDA provider (float32 graph) when it is installed."""
    import copy

    cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
    half = copy.deepcopy(model).half().to(memory_format=torch.channels_last)
    xcl, xhalf = x.contiguous(memory_format=torch.channels_last), x.half().contiguous(memory_format=torch.channels_last)
    compiled = torch.compile(cl)

    def bf16(net):
        def run():
            with torch.autocast(device.type, dtype=torch.bfloat16):
                return net(xcl).float()
        return run

    variants = {"torch fp32": lambda: model(x), "torch bf16 channels_last": bf16(cl),
                "torch fp16 channels_last": lambda: half(xhalf).float(), "compile bf16 channels_last": bf16(compiled)}
    try:
        import onnxruntime as ort
    except ImportError:
        return variants
    provider = "CUDAExecutionProvider" if device.type == "cuda" else "CPUExecutionProvider"
    if provider in ort.get_available_providers():
        graph = registry.compile_for(model.cpu(), "onnx").graph
        model.to(device)
        sess = ort.InferenceSession(graph, providers=[provider])
        xn = x.cpu().numpy()
        variants[f"onnxruntime {provider.replace('ExecutionProvider', '')} fp32"] = (
            lambda: torch.from_numpy(sess.run(None, {"images": xn})[0]))
    return variants


def part_gpu(args) -> None:
    """Accelerator paths side by side (benchmarks/gpu_session.sh runs this with --device cuda): images/s at batch 16
    and each path's cosine similarity to float32 (mean / worst over the batch), written to gpu.json and gpu.md."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    images = load_dataset("nordland_test").db_images[:args.batch]
    rows = []
    for release in args.models:
        for size in args.sizes:
            model = registry.create(release, pretrained=True).eval()
            model.input_config = {**model.input_config, "input_size": (3, *size)}
            x = load_images(images, model.input_config).to(device)
            model.to(device)
            with torch.inference_mode():
                ref = F.normalize(model(x).float(), dim=-1)
                for name, fn in _gpu_variants(model, x, device).items():
                    start = time.perf_counter()
                    desc = F.normalize(fn().to(device).float(), dim=-1)  # first call: compilation, allocation
                    _sync(device)
                    first = time.perf_counter() - start
                    per_call = _time_calls(lambda: (fn(), _sync(device)), None, args.seconds)
                    cos = (desc * ref).sum(-1)
                    rows.append({"model": release, "size": f"{size[0]}x{size[1]}", "path": name,
                                 "images_per_s": len(x) / per_call, "first_call_s": first,
                                 "cosine_mean": float(cos.mean()), "cosine_min": float(cos.min())})
                    log(f"{release} {size[0]}x{size[1]} {name}: {rows[-1]['images_per_s']:.1f} img/s, cosine "
                        f"{rows[-1]['cosine_mean']:.5f} / {rows[-1]['cosine_min']:.5f}")
    write_text_atomic(out / "gpu.json", json.dumps({"device": str(device), "name": _device_name(device),
                                                    "batch": len(images), "torch": torch.__version__, "rows": rows},
                                                   indent=1))
    lines = [f"{_device_name(device)}, batch {len(images)}, torch {torch.__version__}", "",
             "| model | input | path | img/s | x fp32 | first call (s) | cosine to fp32 (mean / worst) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        base = next(b for b in rows if (b["model"], b["size"], b["path"]) == (r["model"], r["size"], "torch fp32"))
        lines.append(f"| {r['model'].split('.')[0]} | {r['size']} | {r['path']} | {r['images_per_s']:.1f} | "
                     f"{r['images_per_s'] / base['images_per_s']:.2f} | {r['first_call_s']:.1f} | "
                     f"{r['cosine_mean']:.5f} / {r['cosine_min']:.5f} |")
    write_text_atomic(out / "gpu.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({cpu_model()})"


# ---------------------------------------------------------------------------------------------------- report
def _speed_lines(speed: Dict[str, Any]) -> List[str]:
    """The GEMM peaks and one row per (model, size, runtime, threads): images/s at batch 16, batch-1 latency, both
    against eager, and the achieved fraction of the peak (int8 runtime: of the int8 peak)."""
    peaks = speed["gemm"]
    lines = [f"CPU: {speed['cpu']}; torch {speed['torch']}, onnxruntime {speed['onnxruntime']}; {speed['date']}", "",
             "| peak GEMM (best of 2048^3, 4096^3) | " + " | ".join(f"{t} thread(s)" for t in peaks) + " |",
             "|---|" + "---|" * len(peaks),
             "| float32: best of torch.mm, onnxruntime MatMul (GFLOP/s) | "
             + " | ".join(f"{peaks[t]['fp32_gflops']:.0f}" for t in peaks) + " |",
             "| int8: best of MatMulInteger, QLinearMatMul, torch quantized Linear (GOP/s) | "
             + " | ".join(f"{peaks[t]['int8_gops']:.0f}" for t in peaks) + " |",
             "", "| model | input | runtime | threads | img/s b16 | x eager | batch-1 latency (ms) | x eager | "
             "GFLOPs/img | % of peak (b16) |", "|---|---|---|---|---|---|---|---|---|---|"]
    rows = speed["rows"]
    idx = {(r["model"], r["size"], r["runtime"], r["threads"], r["batch"]): r for r in rows}
    for key in dict.fromkeys((r["model"], r["size"], r["runtime"], r["threads"]) for r in rows):
        b16, b1 = idx.get(key + (16,)), idx.get(key + (1,))
        e16, e1 = idx.get(key[:2] + ("torch", key[3], 16)), idx.get(key[:2] + ("torch", key[3], 1))
        any_row = b16 or b1
        peak = peaks[str(key[3])]["int8_gops" if key[2].startswith("onnx-int8") else "fp32_gflops"]
        cells = [
            f"{b16['images_per_s']:.2f}" if b16 else "-",
            f"{b16['images_per_s'] / e16['images_per_s']:.2f}" if b16 and e16 else "-",
            f"{b1['latency_ms']:.0f}" if b1 else "-",
            f"{e1['latency_ms'] / b1['latency_ms']:.2f}" if b1 and e1 else "-",
            f"{any_row['gflops_per_image']:.1f}",
            f"{100 * b16['images_per_s'] * any_row['gflops_per_image'] / peak:.0f}%" if b16 else "-",
        ]
        lines.append(f"| {key[0].split('.')[0]} | {key[1]} | {key[2]} | {key[3]} | " + " | ".join(cells) + " |")
    for size, prof in speed.get("profile", {}).items():
        lines += ["", f"Profile at {size}, batch 16, 2 threads (share of operator time):"]
        for runtime, ops in prof.items():
            lines.append(f"- {runtime}: " + ", ".join(f"{k} {100 * v:.0f}%" for k, v in ops))
    return lines


def part_report(args) -> None:
    out = Path(args.out)
    speed = json.loads((out / "speed.json").read_text()) if (out / "speed.json").exists() else {"rows": []}
    recall = json.loads((out / "recall.json").read_text()) if (out / "recall.json").exists() else {}
    rows = speed["rows"]
    lines: List[str] = []
    if rows:
        lines += _speed_lines(speed)
    if recall:
        lines += ["", "| model | runtime | Nordland test R@1 / R@5 / R@10 | Corridor R@1 / R@5 / R@10 | cosine to "
                  "eager, Nordland (mean / worst) | cosine, Corridor | build (s) |", "|---|---|---|---|---|---|---|"]
        for row in recall.values():
            cosines = [row.get(f"{d}_cosine") for d in DATASETS]
            similarity = [f"{c['mean']:.4f} / {c['min']:.4f}" if c else "1 (reference)" if row["runtime"] == "torch"
                          else "-" for c in cosines]
            recalls = [" / ".join(f"{row[d][n]:.2f}" for n in ("1", "5", "10")) for d in DATASETS]
            lines.append(f"| {row['model'].split('.')[0]} | {row['runtime']} | {' | '.join(recalls)} | "
                         f"{' | '.join(similarity)} | {row.get('build_s', '-')} |")
    text = "\n".join(lines)
    write_text_atomic(out / "report.md", text + "\n")
    print(text)
    if recall and rows:
        _plot(rows, recall, out / "inference_runtimes.png")


def _plot(rows, recall, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    markers = {"torch": "o", "compile": "s", "onnx": "^", "onnx-int8": "*"}
    for ax, ds in zip(axes, DATASETS):
        for model in dict.fromkeys(r["model"] for r in rows):
            pts = []
            for runtime in markers:
                speed = [r for r in rows if r["model"] == model and r["runtime"] == runtime and r["threads"] == 2
                         and r["batch"] == 16 and r["size"] == recall.get(f"{model}/{runtime}", {}).get("input_size")]
                rec = recall.get(f"{model}/{runtime}")
                if speed and rec:
                    pts.append((speed[0]["images_per_s"], rec[ds]["1"], runtime))
            if not pts:
                continue
            line, = ax.plot([p[0] for p in pts], [p[1] for p in pts], "-", alpha=0.4)
            for x, y, runtime in pts:
                ax.plot(x, y, markers[runtime], color=line.get_color(), markersize=10 if runtime == "onnx-int8" else 7)
            ax.annotate(model.split("_")[0], (pts[0][0], pts[0][1]), textcoords="offset points", xytext=(-10, 6))
        ax.set_xscale("log")
        ax.set_xlabel("images/s (batch 16, 2 threads, 96x192)")
        ax.set_ylabel(f"{ds} Recall@1 (%)")
        ax.grid(alpha=0.3)
    handles = [plt.Line2D([], [], marker=m, linestyle="", color="grey", label=k) for k, m in markers.items()]
    axes[1].legend(handles=handles, loc="lower right")
    fig.suptitle("Runtimes of the three releases: speed against Recall@1 (CPU)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    log(f"wrote {path}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=("recall", "speed", "report", "gpu", "gemm"), required=True)
    p.add_argument("--out", required=True, help="folder for recall.json, speed.json, report.md, the plot, the cache")
    p.add_argument("--models", default=",".join(RELEASES), type=lambda s: s.split(","))
    p.add_argument("--runtimes", default=",".join(registry.RUNTIMES), type=lambda s: s.split(","))
    p.add_argument("--big-runtimes", default="torch,onnx,onnx-int8", type=lambda s: s.split(","),
                   help="runtimes timed at the large size (default %(default)s: compiling a new shape takes minutes)")
    p.add_argument("--big-models", default=None, type=lambda s: s.split(","),
                   help="--part speed: the models timed at the large size (default: all of --models)")
    p.add_argument("--sizes", default="96x192,480x640", type=lambda s: [tuple(map(int, v.split("x")))
                                                                        for v in s.split(",")])
    p.add_argument("--threads-list", default="1,2", type=lambda s: [int(v) for v in s.split(",")])
    p.add_argument("--threads", type=int, default=2, help="threads of the recall part (default %(default)s)")
    p.add_argument("--datasets", default=",".join(DATASETS), type=lambda s: s.split(","),
                   help="--part recall: datasets (default %(default)s; nordland_val: the validation places "
                        "1601..2000 under --nordland-root)")
    p.add_argument("--calibration-images", type=int, default=CALIBRATION_IMAGES,
                   help="onnx-int8: Nordland training images it is calibrated on (default %(default)s)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds at the small size (default 3)")
    p.add_argument("--seconds", type=float, default=1.5, help="timed seconds per runtime and round, small size")
    p.add_argument("--profile", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--lock", default=LOCK)
    p.add_argument("--device", default="cuda", help="--part gpu: the device (default %(default)s)")
    p.add_argument("--batch", type=int, default=16, help="--part gpu: batch size (default %(default)s)")
    p.add_argument("--nordland-root", default=str(SHARED_NORDLAND),
                   help="Nordland folder with summer/ and winter/ (calibration images from places 1..1600)")
    args = p.parse_args()
    parts = {"recall": part_recall, "speed": part_speed, "report": part_report, "gpu": part_gpu,
             "gemm": part_gemm}
    parts[args.part](args)


if __name__ == "__main__":
    main()
