"""load_dataset: known names, data roots, layout detection, layout:path, errors that list the choices."""
from pathlib import Path

import numpy as np
import pytest
from miniature import write_images

from registry.datasets import DEFAULT_DATASET, detect_layout, known_datasets, load_dataset
from registry.datasets.loader import EMBEDDED_DATA

SHARED_DATA = Path(__file__).resolve().parents[3] / ".." / "shared" / "data"


def need(path: Path) -> Path:
    if not path.is_dir():
        pytest.skip(f"{path.resolve()} is absent: place the project's shared/ folder beside the repository")
    return path


def test_default_dataset_is_the_embedded_corridor():
    ds = load_dataset(DEFAULT_DATASET)
    assert ds.name == "corridor" and ds.root == EMBEDDED_DATA / "corridor"
    assert ds.num_db == ds.num_queries == 111
    assert ds.positives[0].tolist() == [0, 1, 2] and ds.positives[55].tolist() == [53, 54, 55, 56, 57]


def test_embedded_data_stays_small():
    size = sum(p.stat().st_size for p in EMBEDDED_DATA.rglob("*") if p.is_file())
    assert size < 7_000_000  # Corridor (2.6 MB) + Nordland test places (3.3 MB)


def test_embedded_nordland_test_is_the_test_split_without_a_data_root(tmp_path):
    ds = load_dataset("nordland_test", data_root=tmp_path)  # nothing under tmp_path: the embedded copy
    assert ds.name == "nordland_test" and ds.root == EMBEDDED_DATA / "nordland_test"
    assert ds.num_db == ds.num_queries == 400
    assert ds.db_images[0].name == "images-20010.png" and ds.q_images[-1].name == "images-24000.png"
    assert ds.positives[0].tolist() == [0, 1] and ds.positives[10].tolist() == [9, 10, 11]


def test_embedded_nordland_test_equals_the_full_traversal_split():
    full = load_dataset("nordland_test", data_root=need(SHARED_DATA / "nordland").parent)
    own = load_dataset("nordland_test", data_root=EMBEDDED_DATA.parent / "no-such-root")
    assert full.root != own.root
    assert [p.name for p in full.q_images] == [p.name for p in own.q_images]
    assert [p.name for p in full.db_images] == [p.name for p in own.db_images]
    assert all(np.array_equal(a, b) for a, b in zip(full.positives, own.positives))


def test_known_names_cover_every_benchmark():
    names = set(known_datasets())
    assert {"corridor", "nordland_test", "gardens_point", "pitts30k_test", "pitts250k_test", "tokyo247",
            "msls_val", "msls_val_full", "tokyotm_val"} <= names


def test_known_name_under_a_data_root_wins_over_the_default(tmp_path):
    write_images(tmp_path / "gardens_point_sample" / "query", ["0.jpg", "1.jpg"])
    write_images(tmp_path / "gardens_point_sample" / "ref", ["0.jpg", "1.jpg"])
    ds = load_dataset("gardens_point", data_root=tmp_path)
    assert ds.root == tmp_path / "gardens_point_sample" and ds.num_queries == 2


def test_known_name_not_found_lists_where_it_looked_and_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"dataset 'tokyo247' not found; looked in: .*tokyo247.*tokyo247:/path"):
        load_dataset("tokyo247", data_root=tmp_path)


def test_unknown_spec_lists_known_names_and_layouts():
    with pytest.raises(ValueError, match=r"neither a known dataset \(.*corridor.*\).*utm, aligned"):
        load_dataset("no_such_dataset")


def test_known_name_with_a_path_loads_that_folder(tmp_path):
    names = [f"images-{i:05d}.png" for i in range(10, 60, 10)]
    write_images(tmp_path / "winter", names)
    write_images(tmp_path / "summer", names)
    ds = load_dataset(f"nordland:{tmp_path}")
    assert ds.positives[2].tolist() == [1, 2, 3]
    assert load_dataset(f"nordland:{tmp_path}", tolerance=0).positives[2].tolist() == [2]


def test_undetectable_folder_explains_the_layouts(tmp_path):
    (tmp_path / "stuff").mkdir()
    with pytest.raises(ValueError, match=r"cannot tell the layout .*layout:path"):
        detect_layout(tmp_path)


def test_folder_with_several_mat_files_asks_to_name_one(tmp_path):
    for name in ("pitts30k_val.mat", "pitts30k_test.mat"):
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(ValueError, match=r"several .mat files .*netvlad:"):
        load_dataset(str(tmp_path))


def test_real_corridor_ground_truth_parses_as_documented():
    ds = load_dataset(str(need(SHARED_DATA / "corridor")))
    assert ds.num_queries == ds.num_db == 111 and ds.num_queries_without_positives == 0
    for i, pos in enumerate(ds.positives):
        np.testing.assert_array_equal(pos, np.arange(max(0, i - 2), min(110, i + 2) + 1))
    assert ds.q_images[7].name == "0000007.jpg" and ds.db_images[7].name == "0000007.jpg"


def test_real_nordland_test_split_is_places_2001_to_2400_with_one_place_tolerance():
    ds = load_dataset("nordland_test", data_root=need(SHARED_DATA / "nordland").parent)
    assert ds.num_db == ds.num_queries == 400
    assert ds.db_images[0].name == "images-20010.png" and ds.q_images[-1].name == "images-24000.png"
    assert ds.positives[0].tolist() == [0, 1] and ds.positives[10].tolist() == [9, 10, 11]
