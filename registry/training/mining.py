"""Tuple mining: the easiest positive, hard negatives and (optionally) difficult positives per query.

Geometry comes from the dataset: positives lie within the positive radius (10 m on UTM datasets, the
tolerance in places on aligned traversals), negatives farther than the negative radius (25 m). The
ranking uses the current descriptors, recomputed for every cache of queries by the trainer.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np

from ..datasets.base import VPRDataset
from ..evaluation.rerank import k_reciprocal_rerank


@dataclass
class TrainTuple:
    """Indices of one training tuple: query (query space), positive, negatives and difficult positives (database)."""

    query: int
    positive: int
    negatives: np.ndarray
    difficult: np.ndarray


@dataclass
class RerankConfig:
    """k-reciprocal re-ranking used to pick difficult positives (k1, k2, lambda)."""

    k1: int = 20
    k2: int = 1
    lambda_value: float = 0.1


class TupleMiner:
    """Chooses tuples for queries from their descriptors; remembers each query's negatives for the next epoch."""

    def __init__(self, positives: Sequence[np.ndarray], non_negatives: Sequence[np.ndarray], num_db: int,
                 neg_num: int = 1, neg_pool: int = 1000, pos_num: int = 1, pos_pool: int = 20,
                 rerank: Optional[RerankConfig] = None) -> None:
        if len(positives) != len(non_negatives):
            raise ValueError(f"{len(positives)} positive lists but {len(non_negatives)} non-negative lists")
        self.positives = [np.asarray(p, dtype=np.int64) for p in positives]
        self.non_negatives = [np.asarray(p, dtype=np.int64) for p in non_negatives]
        self.num_db = int(num_db)
        self.neg_num, self.neg_pool, self.pos_num, self.pos_pool = neg_num, neg_pool, pos_num, pos_pool
        self.rerank = rerank or RerankConfig()
        self.prev_negatives = np.full((len(self.positives), neg_num), -1, dtype=np.int64)

    @classmethod
    def from_dataset(cls, dataset: VPRDataset, pos_radius: Optional[float] = None,
                     neg_radius: Optional[float] = None, **kwargs) -> "TupleMiner":
        """Positives within `pos_radius`, negatives beyond `neg_radius` (defaults: the dataset's training radii)."""
        pos_r = dataset.train_pos_radius if pos_radius is None else pos_radius
        neg_r = dataset.train_neg_radius if neg_radius is None else neg_radius
        if neg_r < pos_r:
            raise ValueError(f"the negative radius ({neg_r}) must not be smaller than the positive radius ({pos_r})")
        return cls(dataset.train_positives(pos_r), dataset.non_negatives(neg_r), dataset.num_db, **kwargs)

    def trainable_queries(self) -> np.ndarray:
        """Queries with at least one positive and at least neg_num possible negatives."""
        ok = [len(p) > 0 and self.num_db - len(nn) >= self.neg_num
              for p, nn in zip(self.positives, self.non_negatives)]
        return np.flatnonzero(ok)

    def negative_pool(self, query: int, rng: np.random.Generator) -> np.ndarray:
        """neg_pool random database images beyond the negative radius, plus the query's previous negatives."""
        candidates = np.setdiff1d(np.arange(self.num_db), self.non_negatives[query], assume_unique=True)
        size = min(self.neg_pool, len(candidates))
        pool = rng.choice(candidates, size=size, replace=False)
        prev = self.prev_negatives[query]
        return np.unique(np.concatenate([pool, prev[prev >= 0]]))

    def needed_database(self, queries: Sequence[int], pools: Sequence[np.ndarray]) -> np.ndarray:
        """Sorted database indices whose descriptors mining these queries needs."""
        parts = [self.positives[q] for q in queries] + list(pools)
        return np.unique(np.concatenate(parts)) if parts else np.empty(0, np.int64)

    def mine(self, queries: Sequence[int], pools: Sequence[np.ndarray], q_desc: np.ndarray, db_ids: np.ndarray,
             db_desc: np.ndarray, rng: np.random.Generator, difficult: bool = False) -> List[TrainTuple]:
        """One tuple per query; `db_desc[i]` describes database image `db_ids[i]` (sorted ids)."""
        if len(q_desc) != len(queries) or len(db_desc) != len(db_ids):
            raise ValueError("descriptor rows must match the query list and the database id list")
        order = self._reranked(q_desc, db_desc) if difficult and self.pos_num > 0 else None
        tuples = []
        for row, (q, pool) in enumerate(zip(queries, pools)):
            pos = self.positives[q]
            pos_rows = np.searchsorted(db_ids, pos)
            pos_sims = db_desc[pos_rows] @ q_desc[row]
            easiest = int(pos[np.argmax(pos_sims)])
            neg_sims = db_desc[np.searchsorted(db_ids, pool)] @ q_desc[row]
            hardest = pool[np.argsort(-neg_sims, kind="stable")[: self.neg_num]]
            self.prev_negatives[q] = hardest
            extra = self._difficult(pos, pos_sims, easiest, order[row] if order is not None else None, db_ids, rng) \
                if difficult else np.empty(0, np.int64)
            tuples.append(TrainTuple(int(q), easiest, hardest.astype(np.int64), extra))
        return tuples

    def _reranked(self, q_desc: np.ndarray, db_desc: np.ndarray) -> np.ndarray:
        """(Nq, Ndb) positions in db_desc ordered by the k-reciprocal distance (a shortlist, then the rest)."""
        top_k = len(db_desc)
        return k_reciprocal_rerank(q_desc, db_desc, self.rerank.k1, self.rerank.k2, self.rerank.lambda_value,
                                   top_k=top_k)

    def _difficult(self, pos: np.ndarray, pos_sims: np.ndarray, easiest: int, ranked_rows: Optional[np.ndarray],
                   db_ids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """pos_num positives drawn from the pos_pool nearest (re-ranked order), the easiest left out if possible."""
        if ranked_rows is not None:
            ranked = db_ids[ranked_rows]
            ordered = ranked[np.isin(ranked, pos)]
        else:
            ordered = pos[np.argsort(-pos_sims, kind="stable")]
        pool = ordered[: self.pos_pool]
        if len(pool) > 1:
            pool = pool[pool != easiest]
        return rng.choice(pool, size=self.pos_num, replace=len(pool) < self.pos_num).astype(np.int64)
