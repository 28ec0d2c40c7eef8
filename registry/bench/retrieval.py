"""Retrieval for one (model, dataset) pair: the run's IndexSpec resolved once for this database, one index built and
searched, its ranking scored (recall_from_predictions); an exact search beside it only when the loss against exact
search is reported (any --index but flat), and k-reciprocal re-ranking with --rerank."""
from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any, Callable, Dict, Tuple

import numpy as np

from registry.datasets import VPRDataset
from registry.evaluation import (
    IndexSpec,
    PlaceIndex,
    drop_ignored,
    k_reciprocal_rerank,
    recall_from_predictions,
    search,
)
from registry.evaluation.sequence import SequenceSpec, sequence_rankings

from .config import RunConfig, log

Ranker = Callable[[int], np.ndarray]  # k -> (Nq, k) database indices, nearest first


def resolved_spec(cfg: RunConfig, n: int, dim: int) -> IndexSpec:
    """The run's index for `n` database descriptors of `dim` dims: 'auto' chosen (choose_index), IVF-PQ's nlist and
    m filled in."""
    return IndexSpec(cfg.index, **dict(cfg.index_options)).resolved(n, dim)


def _ranker(q: np.ndarray, db: Any, spec: IndexSpec, exact: bool) -> Tuple[Ranker, int]:
    """(the ranking function of the one index over `db`, the bytes that index holds). `exact`: the exact flat search
    of registry.evaluation.search (faiss, on every GPU there is, else torch), which holds the float32 vectors."""
    if exact:
        return (lambda k: search(q, db, k, "flat")), 4 * len(db) * int(q.shape[1])
    index = PlaceIndex(int(q.shape[1]), spec)
    index.add(db)
    return (lambda k: index.search(q, min(k, index.ntotal))[1]), index.memory_bytes()


def _spec_facts(cfg: RunConfig, spec: IndexSpec, dim: int, n: int, memory: int) -> Dict[str, Any]:
    """The index searched, for the record: its spec (IndexSpec's field names and its factory string) and its bytes;
    with --index auto also as `index_choice`, and the choice printed."""
    described = {"factory": spec.factory(dim), **asdict(spec)}
    facts: Dict[str, Any] = {"index_spec": described, "index_memory_bytes": int(memory)}
    if cfg.index == "auto":
        facts["index_choice"] = described
        budget = "no memory limit" if cfg.memory_budget is None else f"a budget of {cfg.memory_budget:,} bytes"
        log(f"   --index auto: {described['factory']}"
            f"{f' + refine {spec.refine} from {spec.refine_from}' if spec.refine else ''} for {n:,} "
            f"{dim}-d descriptors and {budget}")
    return facts


def sequence_facts(q: np.ndarray, db: Any, ds: VPRDataset, lengths, ns) -> Dict[str, Any]:
    """Recall@N of sequences of each length L over exact distances, and the sequence score's milliseconds per query
    (what it adds to the single-frame search); a dataset whose queries are not in route order is skipped, saying
    so."""
    if not ds.route_ordered:
        log(f"   --sequence: {ds.name}'s queries are not known to follow a route in order; sequences not scored")
        return {"sequence_skipped": "queries not in route order"}
    db = np.asarray(db, dtype=np.float32)  # a store's rows read once, for the full distance columns
    recalls, ms = {}, {}
    for length in lengths:
        t0 = time.perf_counter()
        ranked = sequence_rankings(q, db, max(ns), SequenceSpec(int(length)))
        ms[int(length)] = 1e3 * (time.perf_counter() - t0) / max(len(q), 1)
        recalls[int(length)] = recall_from_predictions(ranked, ds.positives, ns)["recall"]
    return {"sequence_recall": recalls, "sequence_ms_per_query": ms}


def retrieval(q: np.ndarray, db: Any, ds: VPRDataset, cfg: RunConfig) -> Tuple[Dict[str, Any], np.ndarray]:
    """(recall facts, the top max(recall_ns, top_k) predictions per query for the grids: empty unless --rerank or
    --num-preds-to-save asks for them)."""
    dim, ns, k = int(q.shape[1]), cfg.recall_ns, max(cfg.recall_ns)
    extra = max((len(i) for i in ds.ignore), default=0) if ds.ignore is not None else 0
    spec = resolved_spec(cfg, len(db), dim)
    exact_index = cfg.index == "flat"
    rank, memory = _ranker(q, db, spec, exact_index)
    ranked = drop_ignored(rank(k + extra), ds.ignore, k)
    base = recall_from_predictions(ranked, ds.positives, ns)
    facts: Dict[str, Any] = {"recall": base["recall"], "num_scored_queries": base["num_queries"],
                             **_spec_facts(cfg, spec, dim, len(db), memory)}
    if not exact_index:  # the loss against exact search; an index that is exact itself is its own baseline
        same = spec.kind == "flat" and not spec.pca_dim
        exact = ranked if same else drop_ignored(search(q, db, k + extra, "flat"), ds.ignore, k)
        facts["exact_recall"] = recall_from_predictions(exact, ds.positives, ns)["recall"]
        facts["recall_loss"] = {n: facts["exact_recall"][n] - base["recall"][n] for n in facts["exact_recall"]}
    if cfg.sequence:
        facts.update(sequence_facts(q, db, ds, cfg.sequence, ns))
    top = max(k, cfg.top_k)
    if cfg.rerank:
        k1, k2, lam = cfg.rerank_params
        pred = drop_ignored(k_reciprocal_rerank(q, db, k1=k1, k2=k2, lambda_value=lam, top_k=top + extra),
                            ds.ignore, top)
        facts["recall_before_rerank"] = base["recall"]
        facts["recall"] = recall_from_predictions(pred[:, :k], ds.positives, ns)["recall"]
    elif cfg.num_preds_to_save:
        pred = ranked if top == k else drop_ignored(rank(top + extra), ds.ignore, top)
    else:
        pred = np.empty((0, top), np.int64)
    return facts, pred
