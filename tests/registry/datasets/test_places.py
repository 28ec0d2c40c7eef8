"""Training data as places: the GSV-Cities layout, a CSV of one's own images, and existing datasets grouped, each
from a tiny fixture in the exact on-disk layout."""
import csv

import numpy as np
import pytest
from PIL import Image

from registry.datasets.aligned import load_aligned
from registry.datasets.places import (
    group_by_distance,
    latlon_to_xyz,
    load_gsv_cities,
    load_images_csv,
    places_from_dataset,
)


def _img(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (10, 20, 30)).save(path)
    return path


GSV_HEADER = ["place_id", "year", "month", "northdeg", "city_id", "lat", "lon", "panoid"]


def _gsv(root, city, places):
    rows = []
    for place, n in places.items():
        for i in range(n):
            lat, lon, panoid = 51.5 + place * 0.01, -0.12 + i * 1e-5, f"pa_no-{place}{i}"
            rows.append([place, 2015 + i, 3 + i, 10 * i, city, lat, lon, panoid])
            name = f"{city}_{place:07d}_{2015 + i:04d}_{3 + i:02d}_{10 * i:03d}_{lat}_{lon}_{panoid}.jpg"
            _img(root / "Images" / city / name)
    (root / "Dataframes").mkdir(parents=True, exist_ok=True)
    with open(root / "Dataframes" / f"{city}.csv", "w", newline="") as f:
        csv.writer(f).writerows([GSV_HEADER] + rows)


def test_gsv_cities_layout(tmp_path):
    _gsv(tmp_path, "London", {0: 4, 1: 5, 2: 2})
    _gsv(tmp_path, "Osaka", {0: 4})
    ps = load_gsv_cities(tmp_path)
    assert ps.num_places == 3  # London place 2 has 2 < 4 images; Osaka's place 0 is not London's place 0
    assert sorted(ps.images_per_place().tolist()) == [4, 4, 5]
    for label in range(3):
        names = {p.name.split("_")[0] + p.name.split("_")[1] for p, lab in zip(ps.images, ps.labels) if lab == label}
        assert len(names) == 1  # every image of a place is one city's one place id
    only = load_gsv_cities(tmp_path, cities=["Osaka"], min_images=2)
    assert only.num_places == 1 and all(p.parent.name == "Osaka" for p in only.images)
    with pytest.raises(FileNotFoundError, match="cities there: London, Osaka"):
        load_gsv_cities(tmp_path, cities=["Paris"])


def test_gsv_cities_missing_image_is_named(tmp_path):
    _gsv(tmp_path, "London", {7: 4})
    victim = sorted((tmp_path / "Images" / "London").iterdir())[1]
    victim.unlink()
    with pytest.raises(FileNotFoundError, match="no image of place 7"):
        load_gsv_cities(tmp_path)


def _csv(path, header, rows):
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([header] + rows)
    return path


def test_images_csv_with_place_labels(tmp_path):
    for i in range(6):
        _img(tmp_path / "photos" / f"{i}.jpg")
    f = _csv(tmp_path / "mine.csv", ["image", "place"], [[f"photos/{i}.jpg", ["door", "lab", "hall"][i % 3]]
                                                          for i in range(6)])
    ps = load_images_csv(f)
    assert ps.labels.tolist() == [0, 1, 2, 0, 1, 2]
    assert ps.images[0] == tmp_path / "photos" / "0.jpg"


def test_images_csv_utm_grouped_by_distance(tmp_path):
    east = [0.0, 3.0, 100.0, 104.0, 300.0]
    for i in range(5):
        _img(tmp_path / f"{i}.png")
    rows = [[f"{i}.png", e, 50.0] for i, e in enumerate(east)]
    f = _csv(tmp_path / "u.csv", ["image", "utm_east", "utm_north"], rows)
    ps = load_images_csv(f, radius=10.0)
    assert ps.labels.tolist() == [0, 0, 1, 1, 2]
    assert ps.place_coords[1].tolist() == [102.0, 50.0]


def test_images_csv_latlon_uses_metres(tmp_path):
    # 1e-4 degrees of latitude is 11.1 m on the Earth's mean sphere
    lats = [45.0, 45.00005, 45.0001, 45.001]
    for i in range(4):
        _img(tmp_path / f"{i}.jpg")
    f = _csv(tmp_path / "g.csv", ["image", "lat", "lon"], [[f"{i}.jpg", la, 7.0] for i, la in enumerate(lats)])
    assert load_images_csv(f, radius=6.0).labels.tolist() == [0, 0, 1, 2]
    xyz = latlon_to_xyz(np.array([45.0, 45.0001]), np.array([7.0, 7.0]))
    assert np.linalg.norm(xyz[1] - xyz[0]) == pytest.approx(6371008.8 * np.radians(1e-4), rel=1e-6)


@pytest.mark.parametrize("header,rows,match", [
    (["file", "place"], [["a.jpg", "x"]], "is not one of"),
    (["image", "lat", "lon"], [["0.jpg", "north", "7"]], "not a number"),
    (["image", "place"], [["nope.jpg", "x"]], "missing"),
    (["image", "place"], [], "lists no images"),
])
def test_images_csv_bad_input_is_named(tmp_path, header, rows, match):
    _img(tmp_path / "0.jpg")
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        load_images_csv(_csv(tmp_path / "bad.csv", header, rows))


def test_group_by_distance_matches_brute_force_bound():
    rng = np.random.default_rng(0)
    coords = rng.uniform(0, 200, size=(300, 2))
    labels = group_by_distance(coords, 15.0)
    for p in np.unique(labels):
        members = np.flatnonzero(labels == p)
        leader = members[0]  # rows are assigned in order: the first member started the place
        assert (np.linalg.norm(coords[members] - coords[leader], axis=1) <= 15.0).all()
    # no unassigned image was within radius of a later leader's start: brute force over leaders
    leaders = [np.flatnonzero(labels == p)[0] for p in np.unique(labels)]
    for a, b in zip(leaders, leaders[1:]):
        assert a < b


def test_aligned_traversals_become_places_with_k_equal_traversals(tmp_path):
    for i in range(1, 6):
        _img(tmp_path / "summer" / f"images-{i:05d}.png")
        _img(tmp_path / "winter" / f"images-{i:05d}.png")
    aligned = load_aligned(tmp_path, "winter", "summer", 1, (2, 5))
    assert aligned.route_ordered  # an aligned traversal is a route: sequence matching may use it
    ps = places_from_dataset(aligned)
    assert ps.num_places == 4 and ps.images_per_place().tolist() == [2, 2, 2, 2]
    assert ps.coord_unit == "place" and ps.place_coords[:, 0].tolist() == [0, 1, 2, 3]
    for p in range(4):
        stems = {img.stem for img, lab in zip(ps.images, ps.labels) if lab == p}
        assert stems == {f"images-{p + 2:05d}"}


def test_load_place_set_specs(tmp_path):
    from registry.datasets.places import load_place_set

    _gsv(tmp_path / "gsv", "Rome", {3: 4})
    assert load_place_set(f"gsv_cities:{tmp_path / 'gsv'}", cities=["Rome"]).num_places == 1
    for i in range(4):
        _img(tmp_path / "p" / f"{i}.jpg")
    f = _csv(tmp_path / "p" / "l.csv", ["image", "place"], [[f"{i}.jpg", i // 2] for i in range(4)])
    assert load_place_set(f"images_csv:{f}").num_places == 2
    for i in range(1, 4):
        _img(tmp_path / "al" / "queries" / f"{i}.png")
        _img(tmp_path / "al" / "database" / f"{i}.png")
    assert load_place_set(f"aligned:{tmp_path / 'al'}").images_per_place().tolist() == [2, 2, 2]
    with pytest.raises(ValueError, match="gsv_cities:DIR only"):
        load_place_set(f"aligned:{tmp_path / 'al'}", cities=["Rome"])
