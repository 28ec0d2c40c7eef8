"""Tuple recipe against place batches: validation Recall@N per epoch and CPU seconds per epoch of two ClusVPR runs
started from the same release recipe (Nordland, 96x192, cached conv1..conv4), from their log.jsonl and a CPU
monitor's samples (`unix_time cpu_seconds log_lines` every 10 s while the run trains).

    python benchmarks/place_batch_pilot.py --run tuples=runs/tuple_clusvpr_seed1 \\
        --run places=runs/places_clusvpr_seed0 --out benchmarks/place_batch/pilot.json

Each run folder's monitor file is RUN.epochs beside it. Writes the JSON, a Markdown table (.md) and a plot (.png).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Dict, List, Optional

from _outputs import save_figure, write_outputs


def epoch_cpu(monitor: Path) -> Dict[int, float]:
    """log lines -> CPU seconds at the first sample that saw that many lines (epoch n-1 committed)."""
    seen: Dict[int, float] = {}
    for line in monitor.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1]:
            seen.setdefault(int(parts[2]), float(parts[1]))
    return seen


def summarise(name: str, run: Path) -> Dict:
    history = [json.loads(line) for line in (run / "train" / "log.jsonl").read_text().splitlines()]
    cpu = epoch_cpu(run.with_suffix(".epochs"))
    rows = []
    for i, record in enumerate(history):
        rows.append({"trained": i, "generation": record["generation"], "epoch": record["epoch"],
                     "val_R@1": record["val_R@1"], "val_R@5": record["val_R@5"],
                     "val_R@10": record["val_R@10"], "loss": record.get("loss"), "cpu_s": cpu.get(i + 1)})
    steady = [b["cpu_s"] - a["cpu_s"] for a, b in zip(rows, rows[1:]) if a["cpu_s"] and b["cpu_s"]]
    best = max(rows, key=lambda r: r["val_R@5"])
    per_epoch = sum(steady) / len(steady) if steady else None
    gain = best["val_R@5"] - rows[0]["val_R@5"]
    cost: Optional[float] = per_epoch * best["trained"] / gain if per_epoch and gain > 0 else None
    return {"name": name, "run": run.name, "epochs": rows, "cpu_s_per_epoch": per_epoch,
            "cpu_epochs_measured": len(steady), "best": best, "val_R@5_gain": gain,
            "cpu_s_per_val_point": cost}


def markdown(runs: List[Dict]) -> str:
    epochs = max(len(r["epochs"]) for r in runs)
    lines = ["| run (validation R@5 after N epochs) | " + " | ".join(str(e) for e in range(epochs)) + " |",
             "|---|" + "---|" * epochs]
    for r in runs:
        cells = [f"{e['val_R@5']:.2f}" for e in r["epochs"]] + [""] * (epochs - len(r["epochs"]))
        lines.append(f"| {r['name']} | " + " | ".join(cells) + " |")
    lines += ["", "| run | CPU s per epoch (epochs measured) | best val R@1 / R@5 / R@10 (epochs trained) | "
              "val R@5 gained | CPU s per val R@5 point |", "|---|---|---|---|---|"]
    for r in runs:
        b = r["best"]
        lines.append(f"| {r['name']} | {r['cpu_s_per_epoch']:.0f} ({r['cpu_epochs_measured']}) | {b['val_R@1']:.2f} / "
                     f"{b['val_R@5']:.2f} / {b['val_R@10']:.2f} ({b['trained']}) | {r['val_R@5_gain']:.2f} | "
                     f"{r['cpu_s_per_val_point']:.0f} |")
    return "\n".join(lines) + "\n"


def plot(runs: List[Dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for r in runs:
        xs = [e["trained"] * r["cpu_s_per_epoch"] / 60 for e in r["epochs"]]
        ax.plot(xs, [e["val_R@5"] for e in r["epochs"]], marker="o", label=r["name"])
    ax.set(xlabel="CPU minutes of training (epochs x mean CPU per epoch)", ylabel="validation R@5 (%)",
           title="ClusVPR on Nordland: tuples against place batches")
    save_figure(fig, [ax], path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", action="append", required=True, metavar="NAME=FOLDER")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    runs = [summarise(*spec.split("=", 1)[:1], Path(spec.split("=", 1)[1])) for spec in args.run]
    write_outputs(runs, args.out, markdown, plot)


if __name__ == "__main__":
    main()
