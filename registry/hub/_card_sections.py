"""The model card's training-budget and weakness sections, rendered from config.json's release facts (`budget`,
`validation_curve`, `not_for`, `untrained_start`, as `vpr release build` records them); a fact not recorded is said
to be missing."""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Sequence

NS = ("R@1", "R@5", "R@10")
STOPPED = {"max_epochs": "its maximum reached", "not recorded": "why is not recorded"}
_START = ("the same architecture and options, the off-the-shelf backbone and the k-means centres its training began "
          "from, no training")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _schedule(gens: Sequence[Mapping[str, Any]]) -> str:
    """"2 generations of at most 6 + 3 x 4 epochs" from each generation's maximum."""
    most = [int(g["max_epochs"]) for g in gens]
    if len(most) == 1:
        return f"1 generation of at most {_plural(most[0], 'epoch')}"
    if len(set(most[1:])) == 1:
        body = f"{len(most)} x {most[0]}" if most[0] == most[1] else f"{most[0]} + {len(most) - 1} x {most[1]}"
    else:
        body = " + ".join(map(str, most))
    return f"{len(most)} generations of at most {body} epochs"


def _stopping_rule(budget: Mapping[str, Any]) -> str:
    gens, by, patience = budget["generations_trained"], budget.get("select_by"), budget.get("patience")
    if patience is None:
        return f"no early stopping: every generation trains its maximum; {_schedule(gens)}"
    return (f"early stopping with patience {patience}: a generation ends after {_plural(patience, 'epoch')} in a row "
            f"without a better validation {by} than the best so far, or at its maximum; {_schedule(gens)}")


def _trained(budget: Mapping[str, Any]) -> str:
    parts = []
    for g in budget["generations_trained"]:
        why = STOPPED.get(g["stopped"]) or (f"patience reached: {_plural(g['stale_epochs'], 'epoch')} without a "
                                            f"better validation {budget.get('select_by')}")
        parts.append(f"generation {g['generation']}: {g['epochs']} of at most {g['max_epochs']} ({why})")
    return "; ".join(parts) + f"; {budget['epochs_trained']} in all"


def _hours(seconds: Any) -> str:
    return "not recorded" if seconds is None else f"{float(seconds) / 3600:.2f} h ({float(seconds):.0f} s)"


def _row(values: Mapping[str, Any], keys: Sequence[str] = NS) -> str:
    return " / ".join(f"{float(values[k]):.2f}" if k in values else "-" for k in keys)


def _budget_lines(budget: Mapping[str, Any]) -> List[str]:
    chosen = budget.get("chosen") or {}
    pick = (f"generation {chosen['generation']}, epoch {chosen['epoch']}, the best validation "
            f"{budget.get('select_by')} of the run (R@1 / R@5 / R@10: {_row(chosen.get('recalls') or {})})"
            if "epoch" in chosen
            else "not recorded")
    cpu = _hours(budget.get("cpu_seconds"))
    return [f"- Stopping rule: {_stopping_rule(budget)}",
            f"- Epochs trained: {_trained(budget)}",
            f"- Epoch chosen: {pick}",
            f"- Time (wall clock): training with validation {_hours(budget.get('train_seconds'))}, the whole "
            f"command with its final evaluation {_hours(budget.get('wall_seconds'))} (both since its last start, "
            f"for a resumed run), the epochs' training steps alone {_hours(budget.get('epoch_seconds'))} (every "
            f"epoch, validation excluded); CPU time {cpu}"]


def _curve_table(curve: Mapping[str, Any], chosen: Mapping[str, Any], validation: str, by: str) -> List[str]:
    points = list(curve.get("points") or [])
    keys = sorted({k for p in points for k in p if k.startswith("R@")}, key=lambda k: (len(k), k))
    lines = [f"Validation recalls on {validation} (percent), as the trainer measured them after each epoch (before "
             f"the final whitening); epoch 0 is the model before training, *better* an epoch that raised the best "
             f"validation {by} so far, **chosen** the epoch released:", "",
             "| Generation | Epoch | " + " | ".join(keys) + " | |", "|---|---|" + "---|" * len(keys) + "---|"]
    for p in points:
        mark = ("**chosen**" if (p["generation"], p["epoch"]) == (chosen.get("generation"), chosen.get("epoch"))
                else "start" if (p["generation"], p["epoch"]) == (0, 0) else "*better*" if p.get("best") else "")
        lines.append(f"| {p['generation']} | {p['epoch']} | " + " | ".join(
            f"{float(p[k]):.2f}" if k in p else "-" for k in keys) + f" | {mark} |")
    if len(points) < int(curve.get("epochs", len(points))):
        lines += ["", f"{len(points)} of the {curve['epochs']} logged epochs shown: the start, each generation's "
                  "last epoch, the chosen one and evenly spaced others."]
    return lines


def training_budget(release: Mapping[str, Any], training: Mapping[str, Any]) -> str:
    """The stopping rule, the epochs trained and why each generation stopped, the epoch chosen, the time, and the
    per-epoch validation table; a card without these facts says so."""
    budget, curve = release.get("budget"), release.get("validation_curve")
    if not budget:
        return ("Not recorded: config.json holds no training budget or validation curve for these weights "
                "(`vpr release build` records them from the run's train/log.jsonl).")
    lines = _budget_lines(budget)
    if curve:
        lines += [""] + _curve_table(curve, budget.get("chosen") or {}, str(training.get("validation") or
                                                                            "the validation set"),
                                     str(budget.get("select_by")))
    return "\n".join(lines)


def _comparison_table(comparison: Mapping[str, Any]) -> List[str]:
    lines = ["| Dataset | " + " | ".join(NS) + " | release row |", "|---|" + "---|" * len(NS) + "---|"]
    for dataset, row in comparison["rows"].items():
        cells = []
        for n in NS:
            cell = f"{row['start'][n]:.2f} -> {row['release'][n]:.2f}"
            cells.append(f"**{cell} (worse)**" if n in comparison["worse"].get(dataset, ()) else cell)
        source = ("its measured recalls above" if row["release_from"] == "recalls"
                  else "measured on the stored weights by `vpr release build`")
        lines.append(f"| {dataset} | " + " | ".join(cells) + f" | {source} |")
    return lines


def _worse_sentence(worse: Mapping[str, Sequence[str]]) -> str:
    if not worse:
        return ("On no dataset of the comparison is it worse than its untrained start, at "
                + ", ".join(NS) + ".")
    named = "; ".join(f"{d} ({', '.join(ns)})" for d, ns in worse.items())
    return (f"**Worse than its untrained start on: {named}.** Training lost what the off-the-shelf start had "
            "there: measure it on your own data before deploying it to such data.")


def _against_start(comparison: Mapping[str, Any]) -> List[str]:
    if comparison.get("missing"):
        return [f"The untrained-start file given (`{comparison.get('command')}`) holds no start of "
                f"`{comparison.get('architecture')}`: not compared with its start."]
    of = f" from the recorded training command of `{comparison['start_of']}`" if comparison.get("start_of") else ""
    head = (f"Against its untrained start ({_START}; built and measured by `{comparison.get('command')}`{of}), "
            "Recall@N in percent, start -> release; **bold (worse)**: the release is below its start:")
    return [head, ""] + _comparison_table(comparison) + ["", _worse_sentence(comparison["worse"])]


def weaknesses(release: Mapping[str, Any], datasets: Sequence[str]) -> str:
    """The domains the weights have not seen and, when recorded, the comparison with their untrained start."""
    seen = release.get("trained_on") or ", ".join(datasets) or "not recorded"
    lines = [f"**Domains it has not seen:** any but its training data ({seen})."
             + (f" It is not {release['not_for']}." if release.get("not_for") else ""), ""]
    comparison: Dict[str, Any] = dict(release.get("untrained_start") or {})
    if comparison:
        lines += _against_start(comparison)
    else:
        lines.append(f"The comparison with its untrained start ({_START}) was not given for these weights "
                     "(`vpr release build --untrained-start FILE`, FILE written by "
                     "`python benchmarks/untrained_start.py`): whether training made it worse than its start "
                     "anywhere is not measured here. The comparison of the bundled releases, measured once, is in "
                     "the clusvpr-zoo repository's `benchmarks/results/untrained-start.md`.")
    return "\n".join(lines)
