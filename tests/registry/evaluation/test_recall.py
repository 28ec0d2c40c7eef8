"""Recall@N against a brute-force float64 computation; queries without positives; ignore; IVF-PQ; fallback."""
import numpy as np
import pytest

from registry.evaluation import recall as recall_mod
from registry.evaluation import recall_at_n, recall_from_predictions, search

NS = (1, 5, 10, 20)


def random_case(seed: int = 0, nq: int = 60, ndb: int = 400, dim: int = 16):
    """Random descriptors whose top-21 float64 scores are separated by > 1e-5 (seeds with near-ties are skipped)."""
    rng = np.random.default_rng(seed)
    while True:
        q, db = rng.standard_normal((nq, dim)), rng.standard_normal((ndb, dim))
        qn, dbn = (x / np.linalg.norm(x, axis=1, keepdims=True) for x in (q, db))
        scores = qn @ dbn.T
        top = np.sort(scores, axis=1)[:, ::-1][:, :21]
        if np.min(-np.diff(top, axis=1)) > 1e-5:
            break
    positives = [rng.choice(ndb, size=rng.integers(1, 30), replace=False) for _ in range(nq)]
    return q.astype(np.float32), db.astype(np.float32), positives, scores


def brute_force_recall(scores: np.ndarray, positives, ns=NS):
    order = np.argsort(-scores, axis=1)
    hits = {n: [np.isin(order[i, :n], positives[i]).any() for i in range(len(positives)) if len(positives[i])]
            for n in ns}
    return {n: 100.0 * np.mean(h) for n, h in hits.items()}


def test_recall_equals_brute_force_float64():
    q, db, positives, scores = random_case()
    result = recall_at_n(q, db, positives)
    assert result["recall"] == pytest.approx(brute_force_recall(scores, positives), abs=1e-9)
    assert 0 < result["recall"][1] < result["recall"][20] < 100


def test_search_order_equals_brute_force_order():
    q, db, _, scores = random_case(seed=1)
    np.testing.assert_array_equal(search(q, db, 20), np.argsort(-scores, axis=1)[:, :20])


def test_queries_without_positive_are_excluded_and_counted():
    q, db, positives, scores = random_case(seed=2)
    positives[3] = np.array([], dtype=np.int64)
    positives[7] = np.array([], dtype=np.int64)
    result = recall_at_n(q, db, positives)
    assert result["num_queries"] == len(q) - 2 and result["num_queries_without_positives"] == 2
    assert result["recall"] == pytest.approx(brute_force_recall(scores, positives), abs=1e-9)


def test_ignored_database_images_are_skipped_in_the_ranking():
    q, db, _, scores = random_case(seed=3)
    order = np.argsort(-scores, axis=1)
    positives = [order[i, 1:2] for i in range(len(q))]  # the second-best is the only positive
    ignore = [order[i, :1] for i in range(len(q))]      # and the best is ignored
    assert recall_at_n(q, db, positives, ns=(1,))["recall"][1] == 0.0
    assert recall_at_n(q, db, positives, ns=(1,), ignore=ignore)["recall"][1] == 100.0


def test_torch_fallback_gives_the_same_recall_without_faiss(monkeypatch):
    q, db, positives, _ = random_case(seed=4)
    expected = recall_at_n(q, db, positives)
    monkeypatch.setattr(recall_mod, "faiss", None)
    assert recall_at_n(q, db, positives) == expected


def test_ivfpq_reports_its_recall_loss_against_exact_search():
    q, db, positives, scores = random_case(seed=5, ndb=600)
    result = recall_at_n(q, db, positives, index="ivfpq", nlist=8, m=4, nbits=4, nprobe=2)
    assert result["index"] == "ivfpq"
    assert result["exact_recall"] == pytest.approx(brute_force_recall(scores, positives), abs=1e-9)
    for n in NS:
        assert result["recall_loss"][n] == pytest.approx(result["exact_recall"][n] - result["recall"][n])
    assert any(abs(v) > 0 for v in result["recall_loss"].values())


def test_ivfpq_with_too_few_vectors_explains_the_fix():
    q, db, positives, _ = random_case(seed=6, ndb=100)
    with pytest.raises(ValueError, match=r"needs >= 256 database vectors.*index='flat'"):
        recall_at_n(q, db, positives, index="ivfpq")


def test_recall_without_any_positive_is_an_error():
    with pytest.raises(ValueError, match="no query has a positive"):
        recall_from_predictions(np.zeros((2, 5), dtype=np.int64), [np.array([], np.int64)] * 2)


def test_drop_ignored_keeps_the_first_k_outside_each_ignore_list():
    """The one implementation the recall and the runner's rankings (grids, re-ranking) both use."""
    from registry.evaluation import drop_ignored

    pred = np.array([[3, 1, 2, 0], [0, 1, 2, 3]])
    assert drop_ignored(pred, [np.array([1]), np.array([0, 1, 2])], 2).tolist() == [[3, 2], [3, -1]]
    assert drop_ignored(pred, None, 2).tolist() == [[3, 1], [0, 1]]
