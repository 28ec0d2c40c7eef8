"""A model's Recall@N row per dataset, `{"R@1": 31.25, "R@5": ...}`: the one format summaries, sweeps, release
facts and model cards record."""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence

import numpy as np

REPORTED_NS = (1, 5, 10)


def recall_row(recall: Mapping[int, float], digits: Optional[int] = 2) -> Dict[str, float]:
    """`{n: recall}` (percent) as `{"R@n": value}` rounded to `digits` (None keeps full precision)."""
    return {f"R@{n}": float(v) if digits is None else round(float(v), digits) for n, v in sorted(recall.items())}


def descriptor_recalls(q: np.ndarray, db: np.ndarray, dataset, ns: Sequence[int] = REPORTED_NS,
                       digits: Optional[int] = 2) -> Dict[str, float]:
    """The recall row of query / database descriptors of `dataset` (its positives and ignored pairs)."""
    from .recall import recall_at_n

    return recall_row(recall_at_n(q, db, dataset.positives, tuple(ns), ignore=dataset.ignore)["recall"], digits)


def recall_table(model, datasets: Sequence, batch_size: int = 32, device="cpu",
                 ns: Sequence[int] = REPORTED_NS, progress: bool = True) -> Dict[str, Dict[str, float]]:
    """`{dataset name: recall row}` of `model` (or a `registry.Runtime`) on each dataset, from its image files (exact
    search)."""
    from .extract import extract_dataset

    out = {}
    for ds in datasets:
        q, db = extract_dataset(model, ds, batch_size=batch_size, device=device, progress=progress)
        out[ds.name] = descriptor_recalls(q, db, ds, ns)
    return out
