"""Tuple mining respects the distance thresholds and ranks by the current descriptors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from registry.datasets import VPRDataset
from registry.training.mining import TupleMiner

NUM = 40


def _line_dataset(pos_radius: float = 1.0, neg_radius: float = 2.5) -> VPRDataset:
    """Database and queries at places 0..NUM-1 along a line (aligned-traversal geometry)."""
    coords = np.arange(NUM, dtype=float)[:, None]
    return VPRDataset(name="line", root=Path("."), db_images=[Path(f"db{i}.png") for i in range(NUM)],
                      q_images=[Path(f"q{i}.png") for i in range(NUM)], positives=[[i] for i in range(NUM)],
                      db_coords=coords, q_coords=coords.copy(), coord_unit="place",
                      train_pos_radius=pos_radius, train_neg_radius=neg_radius)


def _descriptors(seed: int = 0):
    rng = np.random.default_rng(seed)
    d = rng.standard_normal((2 * NUM, 16)).astype(np.float32)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    return d[:NUM], d[NUM:]


def _mine(miner: TupleMiner, rng: np.random.Generator, difficult: bool = False, seed: int = 0):
    q_desc, db_desc = _descriptors(seed)
    queries = miner.trainable_queries()
    pools = [miner.negative_pool(int(q), rng) for q in queries]
    db_ids = miner.needed_database(queries, pools)
    return miner.mine(queries, pools, q_desc[queries], db_ids, db_desc[db_ids], rng, difficult), pools, q_desc, db_desc


def test_positives_within_and_negatives_beyond_the_radii():
    miner = TupleMiner.from_dataset(_line_dataset(), neg_num=5, neg_pool=20)
    tuples, _, _, _ = _mine(miner, np.random.default_rng(0))
    assert len(tuples) == NUM
    for t in tuples:
        assert abs(t.positive - t.query) <= 1
        assert np.all(np.abs(t.negatives - t.query) > 2.5)
        assert len(set(t.negatives.tolist())) == 5


def test_radii_are_options():
    miner = TupleMiner.from_dataset(_line_dataset(), pos_radius=3, neg_radius=10, neg_num=3, neg_pool=10)
    tuples, _, _, _ = _mine(miner, np.random.default_rng(1))
    assert all(abs(t.positive - t.query) <= 3 and np.all(np.abs(t.negatives - t.query) > 10) for t in tuples)
    assert any(abs(t.positive - t.query) > 1 for t in tuples)  # the wider radius is used, not the dataset's
    with pytest.raises(ValueError, match="negative radius"):
        TupleMiner.from_dataset(_line_dataset(), pos_radius=5, neg_radius=2)


def test_easiest_positive_and_hardest_negatives_by_current_descriptors():
    miner = TupleMiner.from_dataset(_line_dataset(), neg_num=2, neg_pool=15)
    tuples, pools, q_desc, db_desc = _mine(miner, np.random.default_rng(2))
    for t, pool in zip(tuples, pools):
        sims = db_desc @ q_desc[t.query]
        positives = miner.positives[t.query]
        assert t.positive == positives[np.argmax(sims[positives])]
        assert sorted(t.negatives.tolist()) == sorted(pool[np.argsort(-sims[pool])[:2]].tolist())


def test_previous_negatives_join_the_next_pool():
    miner = TupleMiner.from_dataset(_line_dataset(), neg_num=2, neg_pool=5)
    tuples, _, _, _ = _mine(miner, np.random.default_rng(3))
    rng = np.random.default_rng(4)
    for t in tuples:
        assert set(t.negatives.tolist()) <= set(miner.negative_pool(t.query, rng).tolist())


def test_difficult_positives_are_other_positives_from_the_pool():
    miner = TupleMiner.from_dataset(_line_dataset(), pos_radius=3, neg_radius=6, neg_num=1, neg_pool=10,
                                    pos_num=2, pos_pool=4)
    tuples, _, _, _ = _mine(miner, np.random.default_rng(5), difficult=True)
    for t in tuples:
        assert len(t.difficult) == 2
        assert t.positive not in t.difficult
        assert np.all(np.abs(t.difficult - t.query) <= 3)


def test_queries_without_positives_or_negatives_are_not_trained():
    miner = TupleMiner([np.array([0]), np.array([], dtype=int)], [np.array([0, 1]), np.array([0])], num_db=3,
                       neg_num=2)
    assert miner.trainable_queries().tolist() == []  # q0: 1 negative for 2 requested; q1: no positive
