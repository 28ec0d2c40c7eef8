"""Sequence matching against single frames: the three releases on routes whose queries are in route order (the
embedded Nordland test places and the Corridor), Recall@N of single frames and of sequences of L frames, and the
extra time per query of the sequence score on maps of 10^3 to 10^5 images.

    python benchmarks/bench_sequence.py --out benchmarks/sequence/sequence.json

Writes the JSON, a Markdown table beside it (.md) and a plot (.png).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from _outputs import save_figure, write_outputs

import registry
from registry.datasets import load_dataset
from registry.evaluation.extract import extract_dataset
from registry.evaluation.recall import recall_from_predictions
from registry.evaluation.sequence import SequenceMatcher, SequenceSpec, sequence_rankings

RELEASES = ("clusvpr_vgg16.nordland", "netvlad_vgg16.nordland", "gem_vgg16.nordland")
DATASETS = ("nordland_test", "corridor")
LENGTHS = (1, 5, 10, 20)
NS = (1, 5, 10)


def recalls(args) -> list:
    rows = []
    for name in args.models:
        model = registry.create(name, pretrained=True)
        for ds_name in args.datasets:
            ds = load_dataset(ds_name)
            q, db = extract_dataset(model, ds, batch_size=16, progress=False)
            single = np.argsort(-(q @ db.T), axis=1, kind="stable")[:, : max(NS)]
            row = {"model": name, "dataset": ds_name, "queries": len(q), "map": len(db),
                   "single": recall_from_predictions(single, ds.positives, NS)["recall"]}
            for length in args.lengths:
                ranked = sequence_rankings(q, db, max(NS), SequenceSpec(length))
                row[f"L{length}"] = recall_from_predictions(ranked, ds.positives, NS)["recall"]
            rows.append(row)
            print(json.dumps(row))
    return rows


def costs(args) -> list:
    """Median extra milliseconds per query of the sequence score (contrast normalisation + speeds x L terms)."""
    rng = np.random.default_rng(0)
    out = []
    for size in args.map_sizes:
        for length in args.lengths:
            matcher = SequenceMatcher(SequenceSpec(length))
            columns = rng.uniform(0.5, 2.0, size=(length + args.repeats, size)).astype(np.float32)
            times = []
            for col in columns:
                t0 = time.perf_counter()
                matcher.push(col)
                times.append(time.perf_counter() - t0)
            out.append({"map": size, "L": length, "ms_median": 1e3 * float(np.median(times[length:])),
                        "ms_p99": 1e3 * float(np.percentile(times[length:], 99))})
            print(json.dumps(out[-1]))
    return out


def markdown(result: dict) -> str:
    lines = ["| model | dataset | single R@1 / R@5 / R@10 | " + " | ".join(f"L={n} R@1 / R@5 / R@10"
                                                                        for n in result["lengths"] if n > 1) + " |",
             "|---|---|---|" + "---|" * sum(n > 1 for n in result["lengths"])]
    fmt = lambda r: " / ".join(f"{r[str(n)] if str(n) in r else r[n]:.2f}" for n in NS)  # noqa: E731
    for row in result["recalls"]:
        cells = [fmt(row["single"])] + [fmt(row[f"L{n}"]) for n in result["lengths"] if n > 1]
        lines.append(f"| {row['model']} | {row['dataset']} | " + " | ".join(cells) + " |")
    lines += ["", "| map images | L | extra ms per query (median) | p99 |", "|---|---|---|---|"]
    lines += [f"| {c['map']} | {c['L']} | {c['ms_median']:.3f} | {c['ms_p99']:.3f} |" for c in result["costs"]]
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(result["datasets"]), figsize=(5 * len(result["datasets"]), 3.6))
    for ax, ds in zip(np.atleast_1d(axes), result["datasets"]):
        for row in (r for r in result["recalls"] if r["dataset"] == ds):
            ys = [row["single"][1]] + [row[f"L{n}"][1] for n in result["lengths"] if n > 1]
            xs = [1] + [n for n in result["lengths"] if n > 1]
            ax.plot(xs, ys, marker="o", label=row["model"].split("_")[0])
        ax.set(title=ds, xlabel="sequence length L (frames)", ylabel="R@1 (%)", ylim=(0, 100))
    save_figure(fig, np.atleast_1d(axes), path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(RELEASES))
    p.add_argument("--datasets", nargs="+", default=list(DATASETS))
    p.add_argument("--lengths", nargs="+", type=int, default=list(LENGTHS))
    p.add_argument("--map-sizes", nargs="+", type=int, default=[1000, 10_000, 100_000])
    p.add_argument("--repeats", type=int, default=200)
    p.add_argument("--out", type=Path, default=Path("benchmarks/sequence/sequence.json"))
    args = p.parse_args()
    result = {"lengths": args.lengths, "datasets": args.datasets, "velocities": list(SequenceSpec().velocities),
              "window": SequenceSpec().window, "threads": os.environ.get("OMP_NUM_THREADS"),
              "recalls": recalls(args), "costs": costs(args)}
    write_outputs(result, args.out, markdown, plot)


if __name__ == "__main__":
    main()
