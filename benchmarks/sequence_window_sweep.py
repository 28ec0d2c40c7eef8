"""Choose the sequence matcher's contrast window on validation places: the released ClusVPR on the Nordland
validation places (1601..2000; needs the Nordland folder under --data-root), Recall@1/5/10 per (window, L).

    python benchmarks/sequence_window_sweep.py --data-root ../shared/data --out benchmarks/sequence/window_sweep.json

Writes the JSON and a Markdown table beside it (.md); `--render` rewrites the table from an existing JSON.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

import registry
from registry.datasets import load_dataset
from registry.evaluation.extract import extract_dataset
from registry.evaluation.recall import recall_from_predictions
from registry.evaluation.sequence import SequenceSpec, sequence_rankings

NS = (1, 5, 10)


def markdown(result: dict) -> str:
    lengths = sorted({r["L"] for r in result["rows"] if r["window"] is not None})
    lines = ["| window (map images) | " + " | ".join(f"L={n} R@1 / R@5 / R@10" for n in lengths) + " |",
             "|---|" + "---|" * len(lengths)]
    single = next(r for r in result["rows"] if r["window"] is None)
    fmt = lambda rec: " / ".join(f"{rec[str(n)]:.2f}" for n in NS)  # noqa: E731
    lines.append("| none (single frames, raw distances) | " + fmt(single["recall"]) + " |" + " |" * (len(lengths) - 1))
    for window in sorted({r["window"] for r in result["rows"] if r["window"] is not None}):
        cells = [fmt(r["recall"]) for n in lengths for r in result["rows"] if r["window"] == window and r["L"] == n]
        lines.append(f"| {window} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root")
    p.add_argument("--render", action="store_true", help="rewrite the .md beside --out from its JSON only")
    p.add_argument("--model", default="clusvpr_vgg16.nordland")
    p.add_argument("--dataset", default="nordland_val")
    p.add_argument("--windows", nargs="+", type=int, default=[5, 10, 20, 50, 100, 200])
    p.add_argument("--lengths", nargs="+", type=int, default=[1, 5, 10, 20])
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    if args.render:
        args.out.with_suffix(".md").write_text(markdown(json.loads(args.out.read_text())))
        return
    if args.data_root is None:
        p.error("--data-root is needed to measure (the Nordland validation places are not embedded)")
    ds = load_dataset(args.dataset, args.data_root)
    q, db = extract_dataset(registry.create(args.model, pretrained=True), ds, batch_size=16, progress=False)
    single = np.argsort(-(q @ db.T), axis=1, kind="stable")[:, : max(NS)]
    rows = [{"window": None, "L": 1, "recall": recall_from_predictions(single, ds.positives, NS)["recall"]}]
    for window in args.windows:
        for length in args.lengths:
            ranked = sequence_rankings(q, db, max(NS), SequenceSpec(length, window=window))
            rows.append({"window": window, "L": length,
                         "recall": recall_from_predictions(ranked, ds.positives, NS)["recall"]})
            print(json.dumps(rows[-1]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {"model": args.model, "dataset": args.dataset, "rows": rows}
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(markdown(result))


if __name__ == "__main__":
    main()
