"""save_descriptors / load_descriptors round trips, written atomically."""
import numpy as np
import pytest

from registry.evaluation import load_descriptors, save_descriptors


@pytest.mark.parametrize("name", ["desc.npz", "desc.h5", "desc.npy"])
def test_round_trip_keeps_queries_and_database_apart(tmp_path, name):
    q, db = np.random.rand(3, 4), np.random.rand(5, 4).astype(np.float32)
    written = save_descriptors(tmp_path / name, q, db)
    assert all(p.is_file() for p in written)
    q2, db2 = load_descriptors(tmp_path / name)
    assert q2.dtype == np.float32 and q2.shape == (3, 4) and db2.shape == (5, 4)
    np.testing.assert_allclose(q2, q, rtol=1e-6)
    np.testing.assert_array_equal(db2, db)


def test_npy_writes_a_memory_mappable_pair(tmp_path):
    written = save_descriptors(tmp_path / "run.npy", np.zeros((2, 3)), np.ones((4, 3)))
    assert sorted(p.name for p in written) == ["run_database.npy", "run_queries.npy"]
    assert np.load(tmp_path / "run_database.npy", mmap_mode="r").shape == (4, 3)


def test_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "desc.npz"
    save_descriptors(target, np.zeros((1, 2)), np.zeros((1, 2)))
    before = target.read_bytes()

    def crash_midway(fh, **arrays):
        fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", crash_midway)
    with pytest.raises(OSError, match="disk full"):
        save_descriptors(target, np.ones((1, 2)), np.ones((1, 2)))
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["desc.npz"]


def test_unknown_suffix_is_rejected(tmp_path):
    with pytest.raises(ValueError, match=r"use a .npy, .npz, .h5 or .hdf5 file name"):
        save_descriptors(tmp_path / "desc.txt", np.zeros((1, 2)), np.zeros((1, 2)))
