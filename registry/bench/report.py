"""results.json, results.csv and results.md (the Markdown table printed to stdout), all from the same records."""
from __future__ import annotations

import contextlib
import csv
import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from registry._util.atomic import atomic_path

from .metrics import FLOPS_NOTE

CSV_FIELDS = ("model", "runtime", "architecture", "dataset", "input_size", "descriptor_dim", "params_m", "gflops",
              "images_per_s", "latency_ms", "peak_memory_mib", "memory_measure", "weights", "trained", "whitening",
              "init", "index", "rerank", "amp", "compiled", "num_queries", "num_database", "extract_s")


def recall_ns(records: Sequence[Dict[str, Any]], meta: Optional[Dict[str, Any]] = None) -> List[int]:
    """The N of Recall@N (the same for every record of a run; from the run's options when none finished)."""
    if not records:
        return sorted(int(n) for n in (meta or {}).get("recall_ns", ()))
    return sorted(int(n) for n in records[0]["recall"])


def label(record: Dict[str, Any]) -> str:
    """The model's label, with its runtime unless it is the default (eager PyTorch): 'clusvpr (onnx-int8)'."""
    runtime = record.get("runtime", "torch")
    return record["model"] if runtime == "torch" else f"{record['model']} ({runtime})"


def untrained(records: Sequence[Dict[str, Any]]) -> List[str]:
    """Labels of the models whose weights are random or off-the-shelf."""
    return list(dict.fromkeys(r["model"] for r in records if not r["trained"]))


def warning_line(records: Sequence[Dict[str, Any]]) -> str:
    """The bold Markdown warning for untrained / off-the-shelf models ('' when every model is trained)."""
    names = untrained(records)
    if not names:
        return ""
    return (f"**Warning: {', '.join(names)}: untrained weights (random init, an off-the-shelf backbone with "
            "k-means centres and an untrained aggregator, or a checkpoint with no training recorded). These are "
            "not the paper's numbers; train, or load published weights, to reproduce those.**")


def table(records: Sequence[Dict[str, Any]], meta: Optional[Dict[str, Any]] = None) -> str:
    """The Markdown results table."""
    ns = recall_ns(records, meta)
    head = (["Model", "Runtime", "Dataset", "Input"] + [f"R@{n}" for n in ns] +
            ["Dim", "Params (M)", "GFLOPs", "img/s", "Latency (ms)", "Peak mem (MiB)", "Whitening", "Weights"])
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in records:
        cells = [r["model"], r.get("runtime", "torch"), r["dataset"], r["input_size"]] + [
            f"{r['recall'][n]:.1f}" for n in ns] + [
            str(r["descriptor_dim"]), f"{r['params_m']:.2f}", f"{r['gflops']:.1f}", f"{r['images_per_s']:.1f}",
            f"{r['latency_ms']:.1f}", f"{r['peak_memory_mib']:.0f}", r["whitening"], r["weights"]]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(lines)


def sequence_table(records: Sequence[Dict[str, Any]], meta: Optional[Dict[str, Any]] = None) -> str:
    """Single frames beside sequences of each length L (records with sequence recalls only); empty without any."""
    rows = [r for r in records if r.get("sequence_recall")]
    if not rows:
        return ""
    ns, lengths = recall_ns(records, meta), sorted({int(n) for r in rows for n in r["sequence_recall"]})
    fmt = lambda rec: " / ".join(f"{rec[n]:.1f}" for n in ns)  # noqa: E731
    head = ["Model", "Runtime", "Dataset", f"single R@{'/'.join(map(str, ns))}"] + [
        f"L={n} R@{'/'.join(map(str, ns))} (ms/query)" for n in lengths]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        cells = [r["model"], r.get("runtime", "torch"), r["dataset"], fmt(r["recall"])] + [
            f"{fmt(r['sequence_recall'][n])} ({r['sequence_ms_per_query'][n]:.2f})" for n in lengths]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(lines)


def notes(records: Sequence[Dict[str, Any]], meta: Dict[str, Any]) -> List[str]:
    """The lines under the table: how each column was measured, the datasets and their credits."""
    out = [
        f"- Run: {meta['elapsed_s']:.0f} s on {meta['device']}, torch {meta['torch']}, seed {meta['seed']}.",
        f"- {FLOPS_NOTE}.",
        f"- img/s: query + database extraction on {meta['device']} (batch {meta['batch_size']}, image decoding and "
        f"resizing included, {meta['num_workers']} loader workers); latency: median of "
        f"{meta['latency_repeats']} batch-1 forward passes after a warm-up.",
        f"- Peak mem: {meta['memory_measure']} during extraction.",
        *_runtime_note(records, meta),
        f"- Recall@N: {meta['index']} index" + (", k-reciprocal re-ranking" if meta["rerank"] else "") + ".",
    ]
    for ds in meta["datasets"]:
        where = "embedded copy in registry/data (see registry/data/README.md)" if ds["embedded"] else ds["root"]
        credit = f"; credit: {ds['credit']}" if ds["credit"] else ""
        out.append(f"- Dataset {ds['name']}: {ds['num_queries']} queries / {ds['num_database']} database images, "
                   f"{where}{credit}.")
    return out


def _runtime_note(records: Sequence[Dict[str, Any]], meta: Dict[str, Any]) -> List[str]:
    runtimes = list(dict.fromkeys(r.get("runtime", "torch") for r in records))
    if runtimes in ([], ["torch"]):
        return []
    line = (f"- Runtime: {', '.join(runtimes)} (registry.compile_for; torch = eager PyTorch, the reference); "
            "img/s and latency are each runtime's own")
    if "onnx-int8" in runtimes:
        line += (f"; onnx-int8 calibrated on {meta.get('calibration_images')} evenly spaced database images per "
                 "dataset (results.json: runtime_facts.calibration, with its cosine to float32 on them)")
    return [line + "."]


def markdown(records: Sequence[Dict[str, Any]], meta: Dict[str, Any]) -> str:
    """results.md: command, table, warning, notes."""
    parts = [f"# VPR benchmark ({meta['date']})", "", f"`{meta['command']}`", "", table(records, meta), ""]
    seq = sequence_table(records, meta)
    if seq:
        parts += ["Sequence matching (the last L frames of the route, SeqSLAM-style; ms/query: what it adds):", "",
                  seq, ""]
    failed = meta.get("failed") or []
    if failed:
        parts += [f"**Failed: {len(failed)} (model, dataset) pair(s); their rows are missing:**", ""]
        parts += [f"- {f['model']} on {f['dataset']}: {f['error']}".replace("\n", " ") for f in failed] + [""]
    warn = warning_line(records)
    if warn:
        parts += [warn, ""]
    parts += notes(records, meta)
    return "\n".join(parts) + "\n"


def _jsonable(record: Dict[str, Any]) -> Dict[str, Any]:
    out = dict(record)
    for key in ("recall", "recall_before_rerank", "exact_recall", "recall_loss", "sequence_ms_per_query"):
        if key in out:
            out[key] = {str(n): v for n, v in out[key].items()}
    if "sequence_recall" in out:
        out["sequence_recall"] = {str(n): {str(m): v for m, v in r.items()} for n, r in out["sequence_recall"].items()}
    return out


def csv_row(record: Dict[str, Any]) -> Dict[str, Any]:
    """A flat CSV row: the scalar fields and one R@N column per N."""
    row = {k: record.get(k, "torch") if k == "runtime" else record[k] for k in CSV_FIELDS}
    row["init"] = record["init"]["method"]
    row.update({f"R@{n}": v for n, v in sorted(record["recall"].items())})
    return row


def write_all(records: Sequence[Dict[str, Any]], meta: Dict[str, Any], out_dir: Path) -> Dict[str, Path]:
    """Write results.json, results.csv and results.md atomically, as one set: all three are written beside their
    targets first and renamed only when every write succeeded, so a failed write (a full disk) leaves all three
    earlier files as they were. Returns their paths."""
    paths = {name: out_dir / f"results.{name}" for name in ("json", "csv", "md")}
    rows = [csv_row(r) for r in records]
    fields = list(rows[0]) if rows else [*CSV_FIELDS, *(f"R@{n}" for n in recall_ns(records, meta))]
    with contextlib.ExitStack() as staged:  # each staged just before its write; all renamed at the end (in reverse)
        tmp = staged.enter_context(atomic_path(paths["json"]))
        tmp.write_text(json.dumps({"meta": meta, "results": [_jsonable(r) for r in records]}, indent=2) + "\n")
        tmp = staged.enter_context(atomic_path(paths["csv"]))
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
        tmp = staged.enter_context(atomic_path(paths["md"]))
        tmp.write_text(markdown(records, meta))
    return paths
