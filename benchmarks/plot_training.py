"""Validation Recall@N per epoch of training runs, one line per run, from their train/log.jsonl; with --json, also
each run's outcome from its train/summary.json, as JSON and the Markdown tables rendered from it.

    python benchmarks/plot_training.py runs/long_clusvpr_seed0 runs/long_netvlad_seed0 ... \\
        --metric R@5 --out benchmarks/nordland_training.png [--json benchmarks/training/long.json]

Epochs are counted over all generations (generation boundaries of a pyramid run are marked); epoch 0 is
the model before training. Prints the per-epoch numbers as a Markdown table. The --json file holds, per run, the
per-epoch validation recalls and what summary.json records (best epoch, final validation, test sets, training and
wall seconds, the command); beside it (.md): the per-epoch table and one line per run of its outcome.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from _outputs import replaced_on_success, save_figure, write_text_atomic

NS = ("1", "5", "10")


def read_log(run: Path) -> List[Dict]:
    path = run / "train" / "log.jsonl"
    if not path.is_file():
        raise SystemExit(f"plot_training.py: error: {path} not found: pass the --output folder of a train.py run")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def read_summary(run: Path) -> Dict[str, Any]:
    path = run / "train" / "summary.json"
    if not path.is_file():
        raise SystemExit(f"plot_training.py: error: {path} not found: is the run finished? (--json needs it; the "
                         "plot alone does not)")
    return json.loads(path.read_text(encoding="utf-8"))


def run_record(run: Path, metric: str, with_summary: bool) -> Dict[str, Any]:
    """One run: its per-epoch validation `metric` and generation, and (with_summary) what summary.json holds."""
    log = read_log(run)
    key = f"val_{metric}"
    if any(r.get(key) is None for r in log):
        raise SystemExit(f"plot_training.py: error: {run} logged no {key} (trained without a validation set?)")
    record: Dict[str, Any] = {"run": run.name, "values": [r[key] for r in log],
                              "generations": [r["generation"] for r in log]}
    if with_summary:
        s = read_summary(run)
        record.update({k: s.get(k) for k in ("final_val", "test", "train_seconds", "wall_seconds", "command")})
        record["best"] = {k: v for k, v in s["best"].items() if k != "score"}
    return record


def _recall(row: Optional[Dict[str, float]]) -> str:
    return "-" if not row else " / ".join(f"{row[f'R@{n}']:.2f}" for n in NS)


def epoch_table(runs: Sequence[Dict[str, Any]], metric: str) -> List[str]:
    width = max(len(r["values"]) for r in runs)
    lines = [f"| run (validation {metric} after N epochs) | " + " | ".join(str(i) for i in range(width)) + " |",
             "|---|" + "---|" * width]
    for r in runs:
        ys = r["values"]
        lines.append(f"| {r['run']} | " + " | ".join(f"{y:.2f}" for y in ys) + " |" + " |" * (width - len(ys)))
    return lines


def markdown(result: Dict[str, Any]) -> str:
    """The per-epoch table, then one line per run: best epoch, final validation, each test set, the times."""
    runs = result["runs"]
    tests = sorted({name for r in runs for name in (r.get("test") or {})})
    lines = epoch_table(runs, result["metric"]) + [
        "", "| run | best (generation, epoch) | validation R@1 / R@5 / R@10 | " +
        "".join(f"{t} R@1 / R@5 / R@10 | " for t in tests) + "training h | wall h |",
        "|---|---|---|" + "---|" * len(tests) + "---|---|"]
    for r in runs:
        hours = [f"{r[k] / 3600:.1f}" if r.get(k) else "-" for k in ("train_seconds", "wall_seconds")]
        lines.append(f"| {r['run']} | {r['best']['generation']}, {r['best']['epoch']} | {_recall(r['final_val'])} | " +
                     "".join(f"{_recall((r.get('test') or {}).get(t))} | " for t in tests) + " | ".join(hours) + " |")
    return "\n".join(lines) + "\n"


def plot(result: Dict[str, Any], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for r in result["runs"]:
        ys, gens = r["values"], r["generations"]
        line, = ax.plot(range(len(ys)), ys, marker="o", ms=3, label=r["run"])
        for i in range(1, len(gens)):
            if gens[i] != gens[i - 1]:
                ax.axvline(i - 0.5, color=line.get_color(), alpha=0.15, lw=1)
    ax.set_xlabel("epoch (all generations; 0 = before training)")
    ax.set_ylabel(f"validation {result['metric']} (%)")
    ax.set_title(title)
    save_figure(fig, [ax], path)


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="train.py output folders")
    p.add_argument("--metric", default="R@5", choices=("R@1", "R@5", "R@10"), help="validation metric (default R@5)")
    p.add_argument("--out", type=Path, help="PNG to write (atomically)")
    p.add_argument("--json", type=Path, help="also write the runs' records here and their tables beside (.md)")
    p.add_argument("--title", default="validation recall per epoch", help="plot title")
    a = p.parse_args(argv)
    if a.out is None and a.json is None:
        p.error("nothing to write: pass --out PNG, --json JSON or both")
    result = {"metric": a.metric, "runs": [run_record(run, a.metric, a.json is not None) for run in a.runs]}
    if a.out is not None:
        with replaced_on_success(a.out) as tmp:
            plot(result, tmp, a.title)
    if a.json is not None:
        write_text_atomic(a.json, json.dumps(result, indent=1) + "\n")
        write_text_atomic(a.json.with_suffix(".md"), markdown(result))
        print(markdown(result), end="")
    else:
        print("\n".join(epoch_table(result["runs"], a.metric)))


if __name__ == "__main__":
    main(sys.argv[1:])
