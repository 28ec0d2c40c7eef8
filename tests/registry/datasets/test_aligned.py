"""Aligned traversals: same file name = same place, tolerance in places, place ranges."""
import pytest
from miniature import write_images

from registry.datasets import load_dataset
from registry.datasets.aligned import load_aligned

NAMES = [f"images-{10 * i:05d}.png" for i in range(1, 11)]


@pytest.fixture
def aligned_root(tmp_path):
    write_images(tmp_path / "database", NAMES)
    write_images(tmp_path / "queries", NAMES[::-1])
    return tmp_path


def test_same_name_is_the_same_place(aligned_root):
    ds = load_aligned(aligned_root)
    assert [p.tolist() for p in ds.positives] == [[i] for i in range(10)]
    assert [q.name for q in ds.q_images] == NAMES


def test_tolerance_widens_positives_by_places(aligned_root):
    ds = load_dataset(f"aligned:{aligned_root}", tolerance=2)
    assert ds.positives[0].tolist() == [0, 1, 2]
    assert ds.positives[5].tolist() == [3, 4, 5, 6, 7]


def test_place_range_keeps_only_those_places_and_tolerance_stays_inside(aligned_root):
    ds = load_aligned(aligned_root, tolerance=1, places=(4, 6))
    assert [p.name for p in ds.db_images] == NAMES[3:6]
    assert [p.tolist() for p in ds.positives] == [[0, 1], [0, 1, 2], [1, 2]]


def test_training_radii_are_in_places(aligned_root):
    ds = load_aligned(aligned_root, tolerance=1)
    assert ds.coord_unit == "place"
    assert ds.train_positives()[5].tolist() == [4, 5, 6]
    assert ds.non_negatives()[5].tolist() == [3, 4, 5, 6, 7]


def test_numeric_names_are_sorted_naturally(tmp_path):
    names = [f"{i}.jpg" for i in range(12)]
    write_images(tmp_path / "ref", names)
    write_images(tmp_path / "query", names)
    ds = load_dataset(str(tmp_path))
    assert [p.name for p in ds.db_images] == names
    assert ds.positives[10].tolist() == [10]


def test_query_without_a_same_named_database_image_is_reported(aligned_root):
    write_images(aligned_root / "queries", ["stray.png"])
    with pytest.raises(ValueError, match=r"1 queries have no database image of the same name.*stray.png"):
        load_aligned(aligned_root)


def test_place_range_outside_the_traversal_is_reported(aligned_root):
    with pytest.raises(ValueError, match=r"places 5..11 are outside the 10 places"):
        load_aligned(aligned_root, places=(5, 11))


def test_missing_folder_is_named(tmp_path):
    write_images(tmp_path / "database", NAMES)
    with pytest.raises(FileNotFoundError, match=r"aligned-traversal query \('queries'\) folder not found"):
        load_aligned(tmp_path)


@pytest.mark.parametrize("folder", ["database", "queries"])
def test_two_images_of_one_place_are_refused_not_one_picked(aligned_root, folder):
    write_images(aligned_root / folder, ["images-00030.jpg"])
    with pytest.raises(ValueError, match=f"{folder} holds two images of place 'images-00030' "
                                         r"\(images-00030.(png|jpg) and images-00030.(png|jpg)\)"):
        load_aligned(aligned_root)


def test_a_missing_aligned_folder_is_said_not_to_exist(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'missing'} does not exist"):
        load_dataset(f"aligned:{tmp_path / 'missing'}")
