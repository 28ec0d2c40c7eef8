"""`vpr whitening-sweep`: Recall@N of trained models at several whitening sizes, chosen on a validation set and
reported on test sets.

    vpr whitening-sweep runs/clusvpr runs/netvlad --val-set nordland_val \\
        --test-set nordland_test --dims 1024 512 256 none --cache-features runs/cache --out sweep.json

Each RUN is a Hub-layout folder (or org/name[@rev]) whose model holds a fitted PCA whitening. The sizes
are its leading components (what fitting at that size gives) or none; the size with the best validation
--select-by is marked, as the trainer's `--whitening-dims` would choose it. With --cache-features
the frozen backbone layers' outputs come from (or go to) that folder, as in training; without it
descriptors are extracted from the images with each dataset's protocol resize.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .._util.files import unwritable
from .._util.options import (
    UsageError,
    add_dataclass_arguments,
    check_data_root,
    data_root_option,
    field_default,
    option,
)
from ..training.config import SELECT_METRICS, TrainConfig, whitening_dim_arg
from ._command import parser, run_command

PROG = "vpr whitening-sweep"


@dataclass
class SweepOptions:
    """The sweep's command-line options, declared once: default and --help text (the parser is generated from them).
    --select-by and --batch-size default to the trainer's --select-by and --eval-batch-size."""

    runs: List[str] = option(help="trained model folders (Hub layout) or org/name[@rev]", flag="runs", nargs="+",
                             metavar="RUN")
    val_set: Optional[str] = option(None, "dataset the size is chosen on (known name or layout:path)", required=True)
    test_set: List[str] = option(help="dataset reported; repeatable", default_factory=list, action="append",
                                 metavar="SPEC")
    dims: Optional[Tuple[Optional[int], ...]] = option(None, "whitening sizes (integers up to the model's whitening "
                                                       "size) or 'none'", type=whitening_dim_arg, nargs="+",
                                                       required=True, metavar="DIM")
    select_by: str = option(field_default(TrainConfig, "select_by"), "validation metric the size is chosen by, as "
                            "the trainer's --select-by (default {default})", choices=SELECT_METRICS)
    cache_features: Optional[str] = option(None, "cached frozen backbone features (as in training)", metavar="DIR")
    data_root: Optional[str] = data_root_option("folder that holds the known datasets")
    batch_size: int = option(field_default(TrainConfig, "eval_batch_size"), "descriptor batch (default {default})")
    threads: Optional[int] = option(None, "CPU threads")
    out: Optional[str] = option(None, "write the rows as JSON here (atomically)")


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The sweep's command line, generated from SweepOptions; every option documented."""
    p = parser(prog, __doc__)
    add_dataclass_arguments(p, SweepOptions)
    return p


def table(rows: List[Dict[str, Any]], names: Sequence[str]) -> str:
    head = "| run | whitening | " + " | ".join(f"{n} R@1 / R@5 / R@10" for n in names) + " |"
    lines = [head, "|" + "---|" * (2 + len(names))]
    for r in rows:
        dim = "none" if r["dim"] is None else str(r["dim"])
        cells = [" / ".join(f"{r[n][k]:.2f}" for k in ("R@1", "R@5", "R@10")) for n in names]
        lines.append(f"| {r['run']} | {dim}{' (chosen)' if r['chosen'] else ''} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None, prog: str = PROG) -> int:
    """Parse, extract each run's descriptors once, evaluate every size; prints the table (exit status 0; 1 when a
    size does not fit a run's whitening, 2 for a bad option)."""
    def body() -> int:
        a = build_parser(prog).parse_args(argv)
        problem = unwritable(Path(a.out).expanduser().parent) if a.out else None
        if problem:  # before any model is loaded or any descriptor extracted
            raise UsageError(f"--out {a.out} cannot be written: {problem}; pass a path in a folder you can write to")
        check_data_root(a.data_root)
        from ._console import console_logging

        with console_logging():
            rows, names = sweep_rows(a)
        print(table(rows, names))
        return 0

    return run_command(prog, body, {ValueError: None})


def sweep_rows(a: argparse.Namespace) -> Tuple[List[Dict[str, Any]], List[str]]:
    """Every row of the sweep (one per run and size; written to --out when given) and the datasets' names."""
    import torch

    from .._util.atomic import atomic_path
    from ..datasets import load_dataset
    from ..training.sweep import sweep

    if a.threads:
        torch.set_num_threads(a.threads)
    kw = {"data_root": a.data_root} if a.data_root else {}
    val = load_dataset(a.val_set, **kw)
    datasets = {val.name: val, **{ds.name: ds for ds in (load_dataset(s, **kw) for s in a.test_set)}}
    rows = [row for run in a.runs for row in sweep(run, datasets, a.dims, val.name, a.select_by,
                                                     a.cache_features, a.batch_size)]
    if a.out:
        with atomic_path(a.out) as tmp:
            Path(tmp).write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return rows, list(datasets)
