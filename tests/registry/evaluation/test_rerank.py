"""k-reciprocal re-ranking on a constructed case whose expected order is known."""
import numpy as np
import pytest

from registry.evaluation import k_reciprocal_rerank, search


def on_circle(angles) -> np.ndarray:
    a = np.asarray(angles, dtype=np.float64)
    return np.stack([np.cos(a), np.sin(a)], axis=1).astype(np.float32)


# query at angle 0. Database: a distractor at -0.08 (closest to the query) whose own neighbours are a tight
# cluster at -0.13..-0.15 (so the query is not among them), and a true pair at 0.10, 0.11 that has the
# query among its nearest neighbours.
QUERY = on_circle([0.0])
DATABASE = on_circle([-0.08, -0.13, -0.14, -0.15, 0.10, 0.11])


def test_plain_search_puts_the_distractor_first():
    assert search(QUERY, DATABASE, 6)[0].tolist() == [0, 4, 5, 1, 2, 3]


def test_reciprocal_neighbours_move_ahead_of_the_distractor():
    order = k_reciprocal_rerank(QUERY, DATABASE, k1=3, k2=1, lambda_value=0.1, top_k=6)
    assert order[0].tolist() == [4, 5, 0, 1, 2, 3]


def test_lambda_one_keeps_the_original_order():
    order = k_reciprocal_rerank(QUERY, DATABASE, k1=3, k2=1, lambda_value=1.0, top_k=6)
    assert order[0].tolist() == search(QUERY, DATABASE, 6)[0].tolist()


def test_reranked_rows_are_permutations_of_the_shortlist():
    rng = np.random.default_rng(0)
    q, db = rng.standard_normal((20, 8)), rng.standard_normal((150, 8))
    order = k_reciprocal_rerank(q, db, k1=10, k2=3, top_k=15)
    np.testing.assert_array_equal(np.sort(order, axis=1), np.sort(search(q, db, 15), axis=1))


def test_invalid_parameters_are_rejected():
    with pytest.raises(ValueError, match="0 <= lambda <= 1"):
        k_reciprocal_rerank(QUERY, DATABASE, lambda_value=1.5)
