"""VPR-Bench `[q, [refs]]` ground truth."""
import numpy as np
import pytest
from miniature import write_images

from registry.datasets import load_dataset
from registry.datasets.vprbench import UnsafeGroundTruthError, load_vprbench


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


class _RunsAShellCommand:
    """A pickle payload: unpickling it calls os.system."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def _write_crafted_gt(path, marker):
    gt = np.empty((1, 2), dtype=object)
    gt[0, 0], gt[0, 1] = 0, _RunsAShellCommand(marker)
    np.save(path, gt, allow_pickle=True)


def test_a_crafted_ground_truth_runs_no_code(bench_root, tmp_path_factory):
    marker = tmp_path_factory.mktemp("marker") / "ran"
    _write_crafted_gt(bench_root / "ground_truth_new.npy", marker)
    with pytest.raises(UnsafeGroundTruthError, match="posix.system|os.system|rebuild .*system.*may be crafted"):
        load_dataset(str(bench_root))  # layout detected, as benchmarks/run.py --datasets FOLDER does
    assert not marker.exists()


def test_the_restricted_reader_still_reads_numpy_integer_rows(bench_root):
    gt = np.empty((2, 2), dtype=object)
    gt[0, 0], gt[0, 1] = np.int64(0), np.array([1, 2], dtype=np.int32)
    gt[1, 0], gt[1, 1] = 2, [np.int64(3)]
    np.save(bench_root / "ground_truth_new.npy", gt, allow_pickle=True)
    assert [p.tolist() for p in load_vprbench(bench_root).positives] == [[1, 2], [], [3]]


def test_only_the_documented_ground_truth_name_is_detected(bench_root, tmp_path_factory):
    marker = tmp_path_factory.mktemp("marker") / "ran"
    (bench_root / "ground_truth_new.npy").unlink()
    _write_crafted_gt(bench_root / "notes.npy", marker)
    with pytest.raises(FileNotFoundError, match="notes.npy; they are not read unless named"):
        load_dataset(str(bench_root))
    assert not marker.exists()


def test_embedded_corridor_ground_truth_reads_without_pickle(bench_root):
    from registry.datasets.loader import EMBEDDED_DATA
    from registry.datasets.vprbench import GT_NAME, load_npy_safely

    safe = load_npy_safely(EMBEDDED_DATA / "corridor" / GT_NAME)
    trusted = np.load(EMBEDDED_DATA / "corridor" / GT_NAME, allow_pickle=True)  # shipped with the package
    assert safe.shape == trusted.shape == (111, 2)
    assert [(int(a), list(b)) for a, b in safe] == [(int(a), list(b)) for a, b in trusted]


@pytest.mark.parametrize("rows, where", [([(0, [0, 1.0])], "reference index 1.0"), ([(0.0, [0])], "query 0.0")])
def test_float_indices_are_refused_not_truncated(bench_root, rows, where):
    write_gt(bench_root / "ground_truth_new.npy", rows)
    with pytest.raises(ValueError, match=f"{where}.*not an integer"):
        load_vprbench(bench_root)


def test_a_float_array_ground_truth_is_refused(bench_root):
    np.save(bench_root / "ground_truth_new.npy", np.array([[0.0, 1.5]]))
    with pytest.raises(ValueError, match="query 0.0.*not an integer"):
        load_vprbench(bench_root)
