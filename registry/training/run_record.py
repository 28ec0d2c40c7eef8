"""What a finished run's train/ folder says of its training budget and validation curve, as release facts.

The log (`train/log.jsonl`, one record per epoch: generation, epoch, validation recalls as `val_R@N`, seconds, and
whether the epoch improved the best validation score so far) and the options (generations, epochs, gen0_epochs,
patience, select_by) give the stopping rule, the epochs each generation trained and why it stopped; summary.json
gives the epoch chosen and the recorded times. The curve keeps at most `MAX_CURVE_POINTS` epochs, so config.json
stays small.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence

from .loop import stale_epochs

MAX_CURVE_POINTS = 240
VAL_PREFIX = "val_"


def max_epochs(options: Mapping[str, Any], generation: int) -> int:
    """The most epochs `generation` may train (`--gen0-epochs` for generation 0 when given, else `--epochs`)."""
    gen0 = options.get("gen0_epochs")
    return int(gen0) if generation == 0 and gen0 is not None else int(options["epochs"])


def _stop_reason(trained: int, most: int, stale: int, patience: Optional[int]) -> str:
    """Why a generation ended: its maximum of epochs, or `patience` epochs in a row without a better score."""
    if trained >= most:
        return "max_epochs"
    if patience is not None and stale >= patience:
        return "patience"
    return "not recorded"


def generations_trained(options: Mapping[str, Any], history: Sequence[Mapping[str, Any]]) -> List[Dict[str, Any]]:
    """Per generation: the epochs it trained (the log's records after epoch 0), its maximum, how many of its last
    epochs in a row did not improve the best score, and why it stopped."""
    patience = options.get("patience")
    rows = []
    for generation in range(int(options.get("generations", 1))):
        own = [r for r in history if r.get("generation") == generation]
        trained = sum(1 for r in own if r.get("epoch", 0) > 0)
        most = max_epochs(options, generation)
        stale = stale_epochs(own, generation)
        rows.append({"generation": generation, "epochs": trained, "max_epochs": most, "stale_epochs": stale,
                     "stopped": _stop_reason(trained, most, stale, patience)})
    return rows


def _seconds(value: Any) -> Optional[float]:
    return None if value is None else float(value)


def budget(options: Mapping[str, Any], history: Sequence[Mapping[str, Any]],
           summary: Mapping[str, Any]) -> Dict[str, Any]:
    """The stopping rule, the epochs trained per generation and why each stopped, the epoch chosen and the times
    the run recorded (CPU time is not recorded by the trainer: None)."""
    gens = generations_trained(options, history)
    best = dict(summary.get("best") or {})
    return {
        "select_by": options.get("select_by"), "patience": options.get("patience"),
        "generations": len(gens), "generations_trained": gens, "epochs_trained": sum(g["epochs"] for g in gens),
        "chosen": {k: best[k] for k in ("generation", "epoch", "recalls") if k in best},
        "epoch_seconds": round(sum(float(r.get("seconds") or 0.0) for r in history), 1),
        "train_seconds": _seconds(summary.get("train_seconds")), "wall_seconds": _seconds(summary.get("wall_seconds")),
        "cpu_seconds": None,
    }


def _kept(n: int, bound: int, must: Sequence[int]) -> List[int]:
    """Indices of `n` records, at most `bound` (or every index in `must`): all, else `must` and evenly spaced ones."""
    if n <= bound:
        return list(range(n))
    must = sorted(set(must))
    bound = max(bound, len(must))
    spare = bound - len(must)
    spaced = {round(i * (n - 1) / (spare - 1)) for i in range(spare)} if spare > 1 else {0, n - 1}
    picked = sorted(spaced | set(must))
    while len(picked) > bound:  # a spaced index dropped, never a required one
        picked.remove(next(i for i in reversed(picked) if i not in must))
    return picked


def validation_curve(history: Sequence[Mapping[str, Any]], chosen: Mapping[str, Any],
                     bound: int = MAX_CURVE_POINTS) -> Dict[str, Any]:
    """Each logged epoch's generation, epoch, validation recalls (the log's values) and whether it improved the
    best so far; more than `bound` epochs keep the start, each generation's last epoch, the chosen one and evenly
    spaced others (`epochs` says how many there were)."""
    records = [r for r in history if any(k.startswith(VAL_PREFIX) for k in r)]
    last = {r.get("generation"): i for i, r in enumerate(records)}
    pick = [i for i, r in enumerate(records)
            if (r.get("generation"), r.get("epoch")) == (chosen.get("generation"), chosen.get("epoch"))]
    points = []
    for i in _kept(len(records), bound, [0, *last.values(), *pick] if records else []):
        r = records[i]
        point = {"generation": int(r.get("generation", 0)), "epoch": int(r.get("epoch", 0)),
                 "best": bool(r.get("best"))}
        point.update({k[len(VAL_PREFIX):]: float(v) for k, v in r.items() if k.startswith(VAL_PREFIX)})
        points.append(point)
    return {"epochs": len(records), "points": points}
