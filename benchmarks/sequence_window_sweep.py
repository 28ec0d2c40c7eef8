"""Choose the sequence matcher's contrast window on validation places: the released ClusVPR on the Nordland
validation places (1601..2000; needs the Nordland folder under --data-root), Recall@1/5/10 per (window, L).

    python benchmarks/sequence_window_sweep.py --data-root ../shared/data --out benchmarks/results/sequence_window.json
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", required=True)
    p.add_argument("--model", default="clusvpr_vgg16.nordland")
    p.add_argument("--dataset", default="nordland_val")
    p.add_argument("--windows", nargs="+", type=int, default=[5, 10, 20, 50, 100, 200])
    p.add_argument("--lengths", nargs="+", type=int, default=[1, 5, 10, 20])
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
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
    args.out.write_text(json.dumps({"model": args.model, "dataset": args.dataset, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
