"""Which int8 choices cost a release recall: calibration size and method, onnxruntime's quantiser options, and which
of the backbone's convolutions stay float32, measured on the Nordland VALIDATION places (1601..2000: winter queries
against the summer database, the test places' protocol), calibrated on training places (1..1600) only.

    python benchmarks/bench_int8_levers.py --out OUT --variants benchmarks/int8_levers.jsonl
    python benchmarks/bench_int8_levers.py --out OUT --variants '{"name": "x", "n": 128, "float": [0, -1]}'
    python benchmarks/bench_int8_levers.py --out OUT --report

A variant is one JSON object: name; n (calibration images, default 32: n/2 summer + n/2 winter from places evenly
spread over 1..1600); method (minmax | percentile | entropy); calib (create_calibrator options: percentile,
symmetric, moving_average, averaging_constant, num_bins, num_quantized_bins); bs (calibration batch size, default
8: the moving average moves once per batch); float (the backbone's convolutions kept float32, indices, negative
from the end; default [-1]); q (quantize_static extra_options: ActivationSymmetric, WeightSymmetric, QuantizeBias
...); act (u8 | s8 activations); reduce_range; per_channel; splits (default ["val"]; also "test", "corridor").
The node selection is the library's (registry.quantize.kept_nodes), the rest is onnxruntime's quantize_static with
the calibration ranges cached per (n, method, calib, bs), so a variant that only changes the float32 convolutions
re-uses them. Each variant appends one JSON line to OUT/levers.jsonl: the cosine of each image's descriptor to
eager float32 (mean / worst) and Recall@1/5/10 per split. Run it under `flock /tmp/vpr-bench.lock` (2 threads).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import torch
from _outputs import write_text_atomic

import registry
from registry.datasets import load_dataset
from registry.datasets.images import open_rgb
from registry.evaluation import Preprocess, recall_at_n
from registry.export import export_onnx, onnx_session
from registry.quantize import QUANTISED_OPS, kept_nodes

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
NS = (1, 5, 10)


def calib_paths(root: Path, n: int) -> List[Path]:
    places = np.linspace(1, 1600, n // 2).round().astype(int)
    return [root / "nordland" / s / f"images-{10 * p:05d}.png" for s in ("summer", "winter") for p in places]


class Levers:
    def __init__(self, args) -> None:
        self.args, self.out = args, Path(args.out)
        (self.out / "cache").mkdir(parents=True, exist_ok=True)
        self.model = registry.create(args.model, pretrained=True).eval()
        self.pre = Preprocess(self.model.input_config)
        self.tag = args.model.split(".")[0]
        self.data: Dict[str, Any] = {}
        self.pre_path = self.out / "cache" / f"{self.tag}_pre.onnx"
        if not self.pre_path.exists():
            from onnxruntime.quantization.shape_inference import quant_pre_process

            with tempfile.TemporaryDirectory() as tmp:
                fp = export_onnx(self.model, Path(tmp) / "m.onnx", verify=False)
                quant_pre_process(str(fp), str(self.pre_path), skip_symbolic_shape=True)

    def load(self, paths) -> torch.Tensor:
        return torch.stack([self.pre(open_rgb(p)) for p in paths])

    def split(self, name: str):
        if name not in self.data:
            ds = {"val": lambda: load_dataset("nordland_val", data_root=self.args.data_root),
                  "test": lambda: load_dataset("nordland_test"), "corridor": lambda: load_dataset("corridor")}[name]()
            x = self.load(list(ds.q_images) + list(ds.db_images))
            ref_path = self.out / "cache" / f"{self.tag}_{name}_eager.npy"
            if ref_path.exists():
                ref = np.load(ref_path)
            else:
                with torch.inference_mode():
                    ref = np.concatenate([self.model(x[i:i + 16]).numpy() for i in range(0, len(x), 16)])
                np.save(ref_path, ref)
            r = recall_at_n(ref[:ds.num_queries], ref[ds.num_queries:], ds.positives, NS)["recall"]
            log(f"{name}: eager float32 R@1/5/10 {r[1]:.2f} / {r[5]:.2f} / {r[10]:.2f}")
            self.data[name] = (ds, x, ref, r)
        return self.data[name]

    def ranges(self, v: Dict[str, Any]) -> Path:
        """The calibration ranges of variant `v` (cached per n, method, calibrator options, batch size)."""
        from onnxruntime.quantization import CalibrationDataReader
        from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data

        key = json.dumps({"n": v.get("n", 32), "method": v.get("method", "minmax"), "calib": v.get("calib", {}),
                          **({"bs": v["bs"]} if v.get("bs", 8) != 8 else {})}, sort_keys=True)
        path = self.out / "cache" / f"{self.tag}_ranges_{hashlib.md5(key.encode()).hexdigest()[:10]}.json"
        if path.exists():
            return path
        start = time.perf_counter()
        cal = self.load(calib_paths(Path(self.args.data_root), v.get("n", 32))).numpy()
        bs = v.get("bs", 8)
        batches = [{"images": cal[i:i + bs]} for i in range(0, len(cal), bs)]

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self.it = iter(batches)

            def get_next(self):
                return next(self.it, None)

        with tempfile.TemporaryDirectory() as tmp:
            calibrator = create_calibrator(self.pre_path, list(QUANTISED_OPS), augmented_model_path=f"{tmp}/aug.onnx",
                                           calibrate_method=method_of(v), providers=["CPUExecutionProvider"],
                                           extra_options=v.get("calib", {}))
            calibrator.collect_data(Reader())
            save_tensors_data(calibrator.compute_data(), path)
        log(f"  calibrated {key} in {time.perf_counter() - start:.0f} s")
        return path

    def run(self, v: Dict[str, Any]) -> Dict[str, Any]:
        import onnx
        from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

        start = time.perf_counter()
        nodes, convs, floats = kept_nodes(onnx.load(str(self.pre_path)), v.get("float", [-1]))
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "q.onnx"
            quantize_static(str(self.pre_path), str(out), None, quant_format=QuantFormat.QDQ,
                            per_channel=bool(v.get("per_channel", 1)), reduce_range=bool(v.get("reduce_range", 0)),
                            activation_type=QuantType.QInt8 if v.get("act") == "s8" else QuantType.QUInt8,
                            weight_type=QuantType.QInt8, op_types_to_quantize=list(QUANTISED_OPS),
                            nodes_to_quantize=nodes, calibrate_method=method_of(v),
                            calibration_cache_path=str(self.ranges(v)), extra_options=v.get("q", {}))
            sess = onnx_session(out.read_bytes(), threads=self.args.threads)
        row = {"model": self.args.model, **v, "float": floats}
        for name in v.get("splits", ["val"]):
            ds, x, ref, r_ref = self.split(name)
            got = np.concatenate([sess.run(None, {"images": x[i:i + 16].numpy()})[0] for i in range(0, len(x), 16)])
            cos = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
            r = recall_at_n(got[:ds.num_queries], got[ds.num_queries:], ds.positives, NS)["recall"]
            hit, hit_ref = top1_hits(got, ds), top1_hits(ref, ds)
            row[name] = {"cos_mean": float(cos.mean()), "cos_min": float(cos.min()),
                         "recall": [float(r[n]) for n in NS], "float32": [float(r_ref[n]) for n in NS],
                         "gained": int((hit & ~hit_ref).sum()), "lost": int((~hit & hit_ref).sum())}
            log(f"{v.get('name')}: {name} cosine {cos.mean():.4f} / {cos.min():.4f}, R@1/5/10 {r[1]:.2f} / {r[5]:.2f} "
                f"/ {r[10]:.2f} ({r[1] - r_ref[1]:+.2f} R@1: {row[name]['gained']} queries gained, "
                f"{row[name]['lost']} lost)")
        row["seconds"] = round(time.perf_counter() - start)
        return row


def top1_hits(desc: np.ndarray, ds) -> np.ndarray:
    """Whether each query's nearest database descriptor (inner product) is one of its positives."""
    q, db = desc[:ds.num_queries], desc[ds.num_queries:]
    top = (q @ db.T).argmax(1)
    return np.array([t in set(np.asarray(p).tolist()) for t, p in zip(top, ds.positives)])


def method_of(v: Dict[str, Any]):
    from onnxruntime.quantization import CalibrationMethod

    return {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
            "entropy": CalibrationMethod.Entropy}[v.get("method", "minmax")]


def log(message: str) -> None:
    print(message, flush=True)


def report(path: Path) -> str:
    """The table of every variant in levers.jsonl, also written beside it as levers.md."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    splits = [s for s in ("val", "test", "corridor") if any(s in r for r in rows)]
    lines = ["| variant | " + " | ".join(f"{s}: cosine (mean / worst) | {s}: R@1 / R@5 / R@10 (R@1 change, "
                                         "queries gained / lost)" for s in splits) + " |",
             "|---|" + "---|---|" * len(splits)]
    for r in rows:
        cells = []
        for s in splits:
            if s not in r:
                cells += ["-", "-"]
                continue
            d = r[s]
            flips = f", +{d['gained']} -{d['lost']}" if "gained" in d else ""
            change = f" ({d['recall'][0] - d['float32'][0]:+.2f}{flips})"
            cells += [f"{d['cos_mean']:.4f} / {d['cos_min']:.4f}", " / ".join(f"{x:.2f}" for x in d["recall"]) + change]
        lines.append(f"| {r['name']} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    write_text_atomic(path.with_suffix(".md"), text)
    print(text, end="")
    return text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder for levers.jsonl and the cache (ranges, eager descriptors)")
    p.add_argument("--model", default="clusvpr_vgg16.nordland")
    p.add_argument("--variants", nargs="*", default=[], help="JSON objects, or files of one JSON object a line")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data-root", default=str(SHARED), help="the folder holding nordland/summer and nordland/winter")
    p.add_argument("--report", action="store_true", help="print levers.jsonl as a markdown table")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    variants: List[Dict[str, Any]] = []
    for item in args.variants:
        text = Path(item).read_text() if not item.lstrip().startswith("{") else item
        variants += [json.loads(line) for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if variants:
        levers = Levers(args)
        for v in variants:
            row = levers.run(v)
            with open(Path(args.out) / "levers.jsonl", "a") as fh:
                fh.write(json.dumps(row) + "\n")
    if args.report:
        report(Path(args.out) / "levers.jsonl")


if __name__ == "__main__":
    main()
