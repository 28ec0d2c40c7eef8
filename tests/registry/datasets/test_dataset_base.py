"""VPRDataset: positives by radius, training positives/negatives, groups, validation."""
from pathlib import Path

import numpy as np
import pytest

from registry.datasets import VPRDataset, neighbours_within


def _line_dataset(ignore=None) -> VPRDataset:
    # database every 5 m along x; two queries at x=0 and x=50
    db = np.column_stack([np.arange(0, 100, 5.0), np.zeros(20)])
    q = np.array([[0.0, 0.0], [50.0, 0.0]])
    return VPRDataset("line", Path("."), [Path(f"{i}.jpg") for i in range(20)], [Path("q0.jpg"), Path("q1.jpg")],
                      neighbours_within(q, db, 25.0), db_coords=db, q_coords=q, ignore=ignore)


def test_neighbours_within_matches_brute_force_distances():
    rng = np.random.default_rng(0)
    q, db = rng.uniform(0, 100, (30, 2)), rng.uniform(0, 100, (200, 2))
    found = neighbours_within(q, db, 12.5)
    dist = np.linalg.norm(q[:, None] - db[None], axis=-1)
    for i in range(len(q)):
        np.testing.assert_array_equal(found[i], np.flatnonzero(dist[i] <= 12.5))


def test_neighbours_within_only_compares_the_same_group():
    coords = np.zeros((2, 2))
    found = neighbours_within(coords[:1], coords, 1.0, q_groups=np.array(["cph"]), db_groups=np.array(["cph", "sf"]))
    np.testing.assert_array_equal(found[0], [0])


def test_training_positives_use_10m_and_non_negatives_25m():
    ds = _line_dataset()
    np.testing.assert_array_equal(ds.train_positives()[1], [8, 9, 10, 11, 12])
    np.testing.assert_array_equal(ds.non_negatives()[1], np.arange(5, 16))
    np.testing.assert_array_equal(ds.train_positives(radius=5)[0], [0, 1])


def test_training_positives_exclude_ignored_images():
    ds = _line_dataset(ignore=[np.array([0]), np.array([10])])
    np.testing.assert_array_equal(ds.train_positives()[1], [8, 9, 11, 12])


def test_dataset_without_coordinates_explains_why_training_mining_fails():
    ds = VPRDataset("gt_only", Path("."), [Path("a.jpg")], [Path("b.jpg")], [np.array([0])])
    with pytest.raises(ValueError, match="gt_only has no coordinates"):
        ds.train_positives()


def test_positive_lists_must_match_the_queries():
    with pytest.raises(ValueError, match="1 positive lists for 2 queries"):
        VPRDataset("bad", Path("."), [Path("a.jpg")], [Path("b.jpg"), Path("c.jpg")], [np.array([0])])
