"""Recall@N by inner-product search of L2-normalised descriptors: exact (faiss, else torch) or a faiss index."""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

import numpy as np
import torch

from .index import IndexSpec, PlaceIndex, normalise

try:
    import faiss
except ImportError:  # the torch search below takes over
    faiss = None

DEFAULT_NS = (1, 5, 10, 20)
_QUERY_CHUNK = 1024
_ADD_CHUNK = 16384


def _flat_index(dim: int):
    index = faiss.IndexFlatIP(dim)
    if faiss.get_num_gpus() > 0:
        index = faiss.index_cpu_to_all_gpus(index)
    return index


def _torch_search(q: np.ndarray, db: np.ndarray, k: int) -> np.ndarray:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dbt = torch.from_numpy(db).to(device)
    out = []
    for start in range(0, len(q), _QUERY_CHUNK):
        scores = torch.from_numpy(q[start : start + _QUERY_CHUNK]).to(device) @ dbt.T
        out.append(scores.topk(k, dim=1).indices.cpu().numpy())
    return np.concatenate(out).astype(np.int64)


def search(q: np.ndarray, db: np.ndarray, k: int, index: str = "flat", **index_options: Any) -> np.ndarray:
    """(Nq, k) database indices by decreasing inner product of the L2-normalised descriptors.

    `index` is one of registry.evaluation.index.INDEX_KINDS; `index_options` are IndexSpec fields (nlist, m,
    nbits, nprobe, hnsw_m, ef_construction, ef_search, pca_dim).
    """
    spec = IndexSpec(index, **index_options)
    if q.shape[1] != db.shape[1]:
        raise ValueError(f"query descriptors have dim {q.shape[1]}, database descriptors {db.shape[1]}")
    k = min(k, len(db))
    if faiss is None:
        if index != "flat":
            raise ImportError(f"index={index!r} needs faiss: pip install faiss-cpu (or faiss-gpu)")
        return _torch_search(normalise(q), normalise(db), k)
    if index != "flat":  # trained on a fixed sample, filled a chunk at a time (a store's memmap stays on disk)
        place = PlaceIndex(db.shape[1], spec)
        place.add(db)
        return place.search(q, k)[1]
    idx = _flat_index(db.shape[1])
    for start in range(0, len(db), _ADD_CHUNK):  # a memory-mapped store is read a chunk at a time
        idx.add(normalise(db[start : start + _ADD_CHUNK]))
    return idx.search(normalise(q), k)[1].astype(np.int64)


def drop_ignored(pred: np.ndarray, ignore: Optional[Sequence[np.ndarray]], k: int) -> np.ndarray:
    """First k predictions per query that are not in its ignore list (-1 pads short rows); `ignore=None` keeps the
    first k. Search k + the longest ignore list to be sure of k."""
    if ignore is None:
        return pred[:, :k]
    out = np.full((len(pred), k), -1, dtype=np.int64)
    for i, (row, ign) in enumerate(zip(pred, ignore)):
        kept = row[~np.isin(row, ign)][:k]
        out[i, : len(kept)] = kept
    return out


def recall_from_predictions(
    predictions: np.ndarray, positives: Sequence[np.ndarray], ns: Sequence[int] = DEFAULT_NS
) -> Dict[str, object]:
    """Recall@N in percent over the queries that have a positive; the others are counted apart."""
    if len(predictions) != len(positives):
        raise ValueError(f"{len(predictions)} prediction rows for {len(positives)} queries")
    has_pos = np.array([len(p) > 0 for p in positives], dtype=bool)
    if not has_pos.any():
        raise ValueError("no query has a positive: recall is undefined (check the ground truth or pos_radius)")
    first_hit = np.full(len(positives), np.inf)
    for i, (row, pos) in enumerate(zip(predictions, positives)):
        hits = np.flatnonzero(np.isin(row, pos))
        if len(hits):
            first_hit[i] = hits[0]
    valid = first_hit[has_pos]
    return {
        "recall": {int(n): float(100.0 * np.mean(valid < n)) for n in ns},
        "num_queries": int(has_pos.sum()),
        "num_queries_without_positives": int((~has_pos).sum()),
    }


def recall_at_n(
    q: np.ndarray,
    db: np.ndarray,
    positives: Sequence[np.ndarray],
    ns: Sequence[int] = DEFAULT_NS,
    index: str = "flat",
    ignore: Optional[Sequence[np.ndarray]] = None,
    **index_options: Any,
) -> Dict[str, object]:
    """Recall@N (percent) of queries `q` against database `db`; with `index='ivfpq'` also the loss vs exact.

    `ignore[i]` lists database indices never counted as retrieved for query i (TokyoTM same-time captures).
    """
    result: Dict[str, object] = {"index": index, **_recall(q, db, positives, ns, index, ignore, index_options)}
    if index != "flat":
        exact = _recall(q, db, positives, ns, "flat", ignore, {})["recall"]
        result["exact_recall"] = exact
        result["recall_loss"] = {n: exact[n] - result["recall"][n] for n in exact}
    return result


def _recall(
    q: np.ndarray,
    db: np.ndarray,
    positives: Sequence[np.ndarray],
    ns: Sequence[int],
    index: str,
    ignore: Optional[Sequence[np.ndarray]],
    index_options: Dict[str, Any],
) -> Dict[str, object]:
    """Search, drop ignored hits, score."""
    k = max(ns)
    extra = max((len(i) for i in ignore), default=0) if ignore is not None else 0
    pred = search(q, db, k + extra, index, **index_options)
    return recall_from_predictions(drop_ignored(pred, ignore, k), positives, ns)
