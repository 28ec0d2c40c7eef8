"""Pittsburgh, Tokyo 24/7 and TokyoTM from miniature NetVLAD dbStruct .mat files."""
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from miniature import write_images

from registry.datasets import load_dataset
from registry.datasets.pitts import load_pitts
from registry.datasets.tokyo import load_tokyo247, load_tokyotm

DB_UTM = np.array([[0.0, 0.0], [20.0, 0.0], [100.0, 0.0], [130.0, 0.0]])
Q_UTM = np.array([[5.0, 0.0], [118.0, 0.0], [500.0, 0.0]])


def write_mat(path: Path, db_names, q_names, db_utm=DB_UTM, q_utm=Q_UTM, **extra) -> Path:
    """A dbStruct with the NetVLAD field names (cell arrays of names, 2 x N UTM)."""
    fields = {
        "whichSet": "test",
        "dbImageFns": np.array(db_names, dtype=object),
        "utmDb": np.asarray(db_utm).T,
        "qImageFns": np.array(q_names, dtype=object),
        "utmQ": np.asarray(q_utm).T,
        "numImages": len(db_names),
        "numQueries": len(q_names),
        "posDistThr": 25.0,
        "posDistSqThr": 625.0,
        "nonTrivPosDistSqThr": 100.0,
    }
    fields.update(extra)
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(str(path), {"dbStruct": fields})
    return path


@pytest.fixture
def pitts_root(tmp_path):
    db = [f"000/00000{i}_pitch1_yaw1.jpg" for i in range(4)]
    q = [f"000/00000{i}_pitch1_yaw1.jpg" for i in range(3)]
    write_images(tmp_path / "images", db)
    write_images(tmp_path / "queries_real", q)
    write_mat(tmp_path / "datasets" / "pitts30k_test.mat", db, q)
    return tmp_path


def test_pittsburgh_positives_are_database_images_within_25m(pitts_root):
    ds = load_pitts(pitts_root, "pitts30k_test")
    assert [p.tolist() for p in ds.positives] == [[0, 1], [2, 3], []]
    assert ds.num_queries_without_positives == 1
    np.testing.assert_array_equal(ds.q_coords, Q_UTM)


def test_pittsburgh_queries_resolve_to_the_query_folder_even_with_database_names(pitts_root):
    ds = load_pitts(pitts_root, "pitts30k_test")
    assert all(p.parent.parent.name == "queries_real" for p in ds.q_images)
    assert all(p.parent.parent.name == "images" for p in ds.db_images)


def test_training_positive_radius_comes_from_non_trivial_threshold(pitts_root):
    ds = load_pitts(pitts_root, "pitts30k_test")
    assert ds.train_pos_radius == pytest.approx(10.0)
    assert [p.tolist() for p in ds.train_positives()] == [[0], [], []]


def test_mat_with_renamed_fields_of_python_tools_is_read(tmp_path):
    write_images(tmp_path / "images", ["a.jpg", "b.jpg", "c.jpg", "d.jpg"])
    write_images(tmp_path / "queries", ["q0.jpg", "q1.jpg", "q2.jpg"])
    fields = {"whichSet": "test", "dbImage": np.array(["a.jpg", "b.jpg", "c.jpg", "d.jpg"], dtype=object),
              "utmDb": DB_UTM.T, "qImage": np.array(["q0.jpg", "q1.jpg", "q2.jpg"], dtype=object),
              "utmQ": Q_UTM.T, "numDb": 4, "numQ": 3}
    scipy.io.savemat(str(tmp_path / "pitts250k_val.mat"), {"dbStruct": fields})
    assert load_pitts(tmp_path, "pitts250k_val").num_db == 4


def test_missing_image_is_named(pitts_root):
    (pitts_root / "images" / "000" / "000002_pitch1_yaw1.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="000002_pitch1_yaw1.jpg"):
        load_pitts(pitts_root, "pitts30k_test")


def test_missing_mat_names_both_places_looked(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"pitts30k_val\.mat not found at .*datasets"):
        load_pitts(tmp_path, "pitts30k_val")


def test_missing_field_is_named(tmp_path):
    scipy.io.savemat(str(tmp_path / "pitts30k_test.mat"), {"dbStruct": {"dbImageFns": np.array(["a"], dtype=object)}})
    with pytest.raises(ValueError, match="no field qImageFns or qImage"):
        load_pitts(tmp_path, "pitts30k_test")


def test_count_mismatch_is_reported(tmp_path):
    write_mat(tmp_path / "pitts30k_test.mat", ["a.jpg"] * 4, ["q.jpg"] * 3, numImages=5)
    with pytest.raises(ValueError, match="says 5 images but 4 are listed"):
        load_pitts(tmp_path, "pitts30k_test")


def test_file_that_is_not_a_mat_is_reported(tmp_path):
    (tmp_path / "pitts30k_test.mat").write_text("not matlab")
    with pytest.raises(ValueError, match="cannot read .*pitts30k_test.mat"):
        load_pitts(tmp_path, "pitts30k_test")


def test_tokyo247_finds_png_files_for_jpg_names_and_sets_the_640_query_resize(tmp_path):
    db = ["03814/a.jpg", "03814/b.jpg", "03815/c.jpg", "03815/d.jpg"]
    write_images(tmp_path / "images", [n.replace(".jpg", ".png") for n in db])
    write_images(tmp_path / "query", ["q0.jpg", "q1.jpg", "q2.jpg"])
    write_mat(tmp_path / "tokyo247.mat", db, ["q0.jpg", "q1.jpg", "q2.jpg"])
    ds = load_tokyo247(tmp_path)
    assert ds.db_images[0].suffix == ".png" and ds.db_images[0].is_file()
    assert ds.query_longer_side == 640
    assert [p.tolist() for p in ds.positives] == [[0, 1], [2, 3], []]


def test_tokyotm_excludes_same_time_captures_from_positives_and_ignores_them(tmp_path):
    names = ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]
    write_images(tmp_path / "images", names + ["q0.jpg", "q1.jpg", "q2.jpg"])
    write_mat(tmp_path / "tokyoTM_val.mat", names, ["q0.jpg", "q1.jpg", "q2.jpg"],
              dbTimeStamp=np.array([201001, 201107, 201001, 201107]), qTimeStamp=np.array([201001, 201001, 201001]))
    ds = load_tokyotm(tmp_path, "val")
    assert [p.tolist() for p in ds.positives] == [[1], [3], []]
    assert [p.tolist() for p in ds.ignore] == [[0], [2], []]


def test_a_mat_file_path_is_detected_and_dispatched_by_name(pitts_root):
    ds = load_dataset(str(pitts_root / "datasets" / "pitts30k_test.mat"))
    assert ds.name == "pitts30k_test" and ds.num_queries == 3
