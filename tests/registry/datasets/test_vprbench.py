"""VPR-Bench `[q, [refs]]` ground truth."""
import numpy as np
import pytest
from miniature import write_images

from registry.datasets import load_dataset
from registry.datasets.vprbench import load_vprbench


def write_gt(path, rows):
    gt = np.empty((len(rows), 2), dtype=object)
    for i, (q, refs) in enumerate(rows):
        gt[i, 0], gt[i, 1] = q, refs
    np.save(path, gt, allow_pickle=True)


@pytest.fixture
def bench_root(tmp_path):
    write_images(tmp_path / "query", [f"{i:07d}.jpg" for i in range(3)])
    write_images(tmp_path / "ref", [f"{i:07d}.jpg" for i in range(4)])
    write_gt(tmp_path / "ground_truth_new.npy", [(0, [0, 1]), (1, [1, 2, 3]), (2, 3)])
    return tmp_path


def test_rows_give_positives_by_sorted_file_index(bench_root):
    ds = load_vprbench(bench_root)
    assert [p.tolist() for p in ds.positives] == [[0, 1], [1, 2, 3], [3]]


def test_queries_missing_from_the_ground_truth_have_no_positive(bench_root):
    write_gt(bench_root / "ground_truth_new.npy", [(2, [0])])
    ds = load_dataset(f"vprbench:{bench_root}")
    assert [p.tolist() for p in ds.positives] == [[], [], [0]]


def test_reference_index_out_of_range_is_reported_with_the_file(bench_root):
    write_gt(bench_root / "ground_truth_new.npy", [(0, [0, 4])])
    with pytest.raises(ValueError, match=r"ground_truth_new.npy: row 0 refers to reference image 4, but there are 4"):
        load_vprbench(bench_root)


def test_malformed_row_is_reported(bench_root):
    np.save(bench_root / "ground_truth_new.npy", np.array([[0, 1, 2]]))
    with pytest.raises(ValueError, match=r"row 0 is .*expected \[query_index, \[reference indices\]\]"):
        load_vprbench(bench_root)


def test_duplicate_query_row_is_reported(bench_root):
    write_gt(bench_root / "ground_truth_new.npy", [(1, [0]), (1, [2])])
    with pytest.raises(ValueError, match="query 1 is listed twice"):
        load_vprbench(bench_root)


def test_missing_ground_truth_is_named(bench_root):
    (bench_root / "ground_truth_new.npy").unlink()
    with pytest.raises(FileNotFoundError, match=r"ground truth .*ground_truth_new.npy not found"):
        load_vprbench(bench_root)
