"""The @UTM_east@UTM_north@...@.jpg folder layout."""
import pytest
from miniature import write_images

from registry.datasets import load_dataset
from registry.datasets.utm_folder import load_utm_folder, parse_utm_name


def utm_name(east: float, north: float, zone: str = "17", letter: str = "T", tag: str = "") -> str:
    return f"@{east}@{north}@{zone}@{letter}@40.4@-79.9@{tag}@@@@@@@@.jpg"


@pytest.fixture
def utm_root(tmp_path):
    split = tmp_path / "images" / "test"
    write_images(split / "database", [utm_name(0, 0), utm_name(20, 0), utm_name(100, 0), utm_name(0, 0, "18", "S")])
    write_images(split / "queries", [utm_name(4, 3), utm_name(300, 0)])
    return tmp_path


def test_positives_are_within_the_radius_and_the_same_utm_zone(utm_root):
    ds = load_utm_folder(utm_root)
    east = [parse_utm_name(p)[0] for p in ds.db_images]
    expected = sorted(i for i, e in enumerate(east) if e in (0.0, 20.0) and "@17@" in ds.db_images[i].name)
    assert ds.positives[0].tolist() == expected
    assert ds.positives[1].tolist() == []


def test_radius_is_configurable(utm_root):
    ds = load_dataset(f"utm:{utm_root}", pos_radius=5.0)
    assert len(ds.positives[0]) == 1


def test_split_folder_can_be_given_directly_and_is_detected(utm_root):
    ds = load_dataset(str(utm_root / "images" / "test"))
    assert ds.num_db == 4 and ds.num_queries == 2


def test_root_with_images_splits_is_detected(utm_root):
    assert load_dataset(str(utm_root)).name == f"{utm_root.name}_test"


def test_name_without_utm_fields_is_reported(utm_root):
    write_images(utm_root / "images" / "test" / "queries", ["holiday.jpg"])
    with pytest.raises(ValueError, match=r"holiday.jpg: the name does not start with @UTM_east@UTM_north@"):
        load_utm_folder(utm_root)


def test_missing_split_folder_is_named(utm_root):
    with pytest.raises(FileNotFoundError, match=r"val database folder not found: .*database"):
        load_utm_folder(utm_root, split="val")
