"""Validation Recall@N per epoch of training runs, one line per run, from their train/log.jsonl.

    python benchmarks/plot_training.py runs/long_clusvpr_seed0 runs/long_netvlad_seed0 ... \\
        --metric R@5 --out benchmarks/nordland_training.png

Epochs are counted over all generations (generation boundaries of a pyramid run are marked); epoch 0 is
the model before training. Prints the same numbers as a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence


def read_log(run: Path) -> List[Dict]:
    path = run / "train" / "log.jsonl"
    if not path.is_file():
        raise SystemExit(f"plot_training.py: error: {path} not found: pass the --output folder of a train.py run")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="train.py output folders")
    p.add_argument("--metric", default="R@5", choices=("R@1", "R@5", "R@10"), help="validation metric (default R@5)")
    p.add_argument("--out", required=True, type=Path, help="PNG to write (atomically)")
    p.add_argument("--title", default="validation recall per epoch", help="plot title")
    a = p.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = f"val_{a.metric}"
    fig, ax = plt.subplots(figsize=(8, 4.5))
    series = {}
    for run in a.runs:
        log = read_log(run)
        ys = [r.get(key) for r in log]
        if any(y is None for y in ys):
            raise SystemExit(f"plot_training.py: error: {run} logged no {key} (trained without a validation set?)")
        series[run.name] = ys
        line, = ax.plot(range(len(ys)), ys, marker="o", ms=3, label=run.name)
        for i in range(1, len(log)):
            if log[i]["generation"] != log[i - 1]["generation"]:
                ax.axvline(i - 0.5, color=line.get_color(), alpha=0.15, lw=1)
    ax.set_xlabel("epoch (all generations; 0 = before training)")
    ax.set_ylabel(f"validation {a.metric} (%)")
    ax.set_title(a.title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = a.out.with_name(a.out.name + ".tmp")  # written beside, then renamed: never a half-written plot
    fig.savefig(tmp, format="png", dpi=120)
    os.replace(tmp, a.out)
    width = max(len(v) for v in series.values())
    print("| run | " + " | ".join(str(i) for i in range(width)) + " |")
    print("|---|" + "---|" * width)
    for name, ys in series.items():
        print(f"| {name} | " + " | ".join(f"{y:.2f}" for y in ys) + " |" + " |" * (width - len(ys)))


if __name__ == "__main__":
    main(sys.argv[1:])
