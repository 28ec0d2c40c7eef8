"""MSLS from miniature CSVs: official val filtering, full set, per-city positives, malformed metadata."""
from pathlib import Path

import numpy as np
import pytest
from miniature import write_images

from registry.datasets import load_dataset
from registry.datasets.msls import load_msls

# (key, easting, northing, pano, in subtask 'all')
CPH_DB = [("d0", 0, 0, False, True), ("d1", 10, 0, False, True), ("d2", 0, 0, True, True),
          ("d3", 1000, 0, False, False)]
CPH_Q = [("q0", 5, 0, False, True), ("q1", 500, 0, False, True), ("q2", 0, 0, True, True), ("q3", 0, 0, False, False)]
SF_DB = [("s0", 0, 0, False, True)]
SF_Q = [("t0", 3, 0, False, True)]


def write_side(folder: Path, rows) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    post = ["", "key", "easting", "northing", "night", "view_direction"]
    raw = ["", "key", "lon", "lat", "ca", "captured_at", "pano"]
    lines = {"postprocessed.csv": [",".join(post)], "raw.csv": [",".join(raw)], "subtask_index.csv": [",all,s2w"]}
    for i, (key, east, north, pano, in_all) in enumerate(rows):
        lines["postprocessed.csv"].append(f"{i},{key},{east},{north},False,Forward")
        lines["raw.csv"].append(f"{i},{key},12.5,55.6,90.0,1500000000000,{pano}")
        lines["subtask_index.csv"].append(f"{i},{in_all},False")
    for name, text in lines.items():
        (folder / name).write_text("\n".join(text) + "\n")
    write_images(folder / "images", [f"{r[0]}.jpg" for r in rows])


@pytest.fixture
def msls_root(tmp_path):
    for city, db, q in (("cph", CPH_DB, CPH_Q), ("sf", SF_DB, SF_Q)):
        write_side(tmp_path / "train_val" / city / "database", db)
        write_side(tmp_path / "train_val" / city / "query", q)
    return tmp_path


def _stems(paths):
    return [p.stem for p in paths]


def test_official_val_drops_panoramas_non_subtask_images_and_queries_without_positives(msls_root):
    ds = load_msls(msls_root)
    assert _stems(ds.db_images) == ["d0", "d1", "s0"]
    assert _stems(ds.q_images) == ["q0", "t0"]
    assert [p.tolist() for p in ds.positives] == [[0, 1], [2]]


def test_full_val_keeps_every_non_panoramic_image_and_queries_without_positives(msls_root):
    ds = load_dataset("msls_val_full:" + str(msls_root))
    assert _stems(ds.db_images) == ["d0", "d1", "d3", "s0"]
    assert _stems(ds.q_images) == ["q0", "q1", "q3", "t0"]
    assert [p.tolist() for p in ds.positives] == [[0, 1], [], [0, 1], [3]]
    assert ds.num_queries_without_positives == 1


def test_positives_never_cross_cities_with_equal_utm(msls_root):
    ds = load_msls(msls_root, official=False)
    sf_query = _stems(ds.q_images).index("t0")
    assert ds.positives[sf_query].tolist() == [3]
    np.testing.assert_array_equal(ds.q_groups, [0, 0, 0, 1])


def test_training_mining_respects_cities(msls_root):
    ds = load_msls(msls_root, official=False)
    assert ds.train_positives()[3].tolist() == [3]


def test_folder_with_train_val_is_detected_as_official_msls(msls_root):
    assert load_dataset(str(msls_root)).num_queries == 2


def test_missing_csv_column_is_named_with_its_file(msls_root):
    post = msls_root / "train_val" / "sf" / "query" / "postprocessed.csv"
    post.write_text(post.read_text().replace("northing", "north"))
    with pytest.raises(ValueError, match=r"sf/query/postprocessed.csv lacks column\(s\) northing"):
        load_msls(msls_root)


def test_missing_csv_file_is_named(msls_root):
    (msls_root / "train_val" / "cph" / "database" / "raw.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"cph/database/raw.csv"):
        load_msls(msls_root)


def test_missing_city_folder_is_named(msls_root):
    with pytest.raises(FileNotFoundError, match=r"MSLS city 'paris' folder not found: .*train_val/paris"):
        load_msls(msls_root, cities=("cph", "paris"))


def test_missing_image_is_named(msls_root):
    (msls_root / "train_val" / "cph" / "query" / "images" / "q0.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"q0.jpg"):
        load_msls(msls_root)


def test_training_split_is_every_city_but_the_validation_ones(msls_root):
    write_side(msls_root / "train_val" / "zurich" / "database", SF_DB)
    write_side(msls_root / "train_val" / "zurich" / "query", SF_Q)
    ds = load_dataset("msls_train:" + str(msls_root))
    assert [p.parts[-4] for p in ds.q_images] == ["zurich"]
