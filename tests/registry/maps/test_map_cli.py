"""`vpr map build|add|query|info`: place ids from folder names, CSV and EXIF coordinates, JSON output equal to the
library's answers, sequence queries, and problems with the map or its input as one line with exit status 2."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from map_helpers import MODEL, write_images
from PIL import Image

from registry.cli import main
from registry.maps import Map

pytest.importorskip("lance")


def _vpr(capsys, *argv) -> tuple:
    status = main(["map", *map(str, argv)])
    out = capsys.readouterr()
    return status, out.out, out.err


@pytest.fixture
def site(tmp_path) -> Path:
    """site/<place>/NNN.png: places 10, 11, 12, 13 with three images each."""
    root = tmp_path / "site"
    for p, place in enumerate((10, 11, 12, 13)):
        for path in write_images(root / str(place), 3, start=3 * p):
            assert Path(path).is_file()
    return root


def test_build_query_info_from_a_folder_with_place_ids_from_folder_names(weights, site, tmp_path, capsys):
    folder = tmp_path / "map"
    status, out, err = _vpr(capsys, "build", folder, "--images", site, "--model", MODEL, "--pretrained", weights,
                            "--places", "from-name", "--index", "flat", "--chunk-size", "5")
    assert status == 0, err
    assert "built" in out and "12 images" in out
    query = sorted(site.rglob("*.png"))[4]  # place 11
    status, out, err = _vpr(capsys, "query", folder, query, "-k", "3", "--json")
    assert status == 0, err
    answer = json.loads(out)
    best = answer["results"][0]["matches"][0]
    assert best["place"] == 11 and best["image"] == str(query) and answer["model"] == MODEL
    m = Map.open(folder)
    assert answer["results"][0]["matches"] == [x.as_dict() for x in m.query([query], k=3)[0]]
    assert answer["map_version"] == m.version and answer["results"][0]["sequence"] is None
    status, out, _ = _vpr(capsys, "info", folder, "--json")
    assert status == 0 and json.loads(out)["count"] == 12 and json.loads(out)["index"]["kind"] == "flat"
    status, out, _ = _vpr(capsys, "info", folder)
    assert status == 0 and "12 images of 32 dims" in out and "runtime torch" in out and "per image" in out


def test_a_file_list_with_csv_places_and_coordinates_then_add(weights, images, tmp_path, capsys):
    listing = tmp_path / "list.txt"
    listing.write_text("# map images\n" + "\n".join(f"images/{Path(p).name}" for p in images[:8]) + "\n")
    table = tmp_path / "places.csv"
    table.write_text("image,place,lat,lon\n" + "".join(f"{Path(p).name},{i // 2},{50 + i},{7.5 - i}\n"
                                                       for i, p in enumerate(images)))
    folder = tmp_path / "map"
    status, _, err = _vpr(capsys, "build", folder, "--images", listing, "--model", MODEL, "--pretrained", weights,
                          "--places", f"csv:{table}", "--coords", f"csv:{table}", "--index", "flat")
    assert status == 0, err
    status, out, _ = _vpr(capsys, "query", folder, images[5], "-k", "1")
    assert status == 0 and "1. place 2  distance 0.0000  row 5" in out and "at (55, 2.5)" in out
    more = tmp_path / "more"
    more.mkdir()
    for p in images[8:12]:
        shutil.copy(p, more)
    status, out, err = _vpr(capsys, "add", folder, "--images", more, "--places", f"csv:{table}", "--coords",
                            f"csv:{table}")
    assert status == 0 and "added 4 images" in out, err
    m = Map.open(folder)
    assert m.count == 12 and m.store.places[8:] == [4, 4, 5, 5]
    np.testing.assert_array_equal(m.store.coords[11], [61.0, -3.5])


def test_coordinates_from_exif_gps_tags(weights, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        exif = Image.Exif()
        exif[0x8825] = {1: "N", 2: (48.0, 8.0, 6.0 * i), 3: "W", 4: (2.0, 30.0, 0.0)}
        Image.open(write_images(tmp_path / "raw", 1, start=i)[0]).convert("RGB").save(photos / f"p{i}.jpg",
                                                                                      exif=exif)
    status, _, err = _vpr(capsys, "build", tmp_path / "map", "--images", photos, "--model", MODEL, "--pretrained",
                          weights, "--coords", "exif", "--index", "flat")
    assert status == 0, err
    np.testing.assert_allclose(Map.open(tmp_path / "map").store.coords[2], [48 + 8 / 60 + 12 / 3600, -2.5])


def test_query_sequence_treats_the_images_as_ordered_frames(weights, images, tmp_path, capsys):
    m = Map.build(tmp_path / "map", images, model=MODEL, pretrained=weights, index="flat", progress=False)
    frames = write_images(tmp_path / "frames", 5, seed=3)
    status, out, err = _vpr(capsys, "query", tmp_path / "map", *frames, "-k", "3", "--sequence", "3", "--json")
    assert status == 0, err
    results = json.loads(out)["results"]
    want = m.sequence_query(frames, k=3, length=3)
    assert [r["sequence"]["matches"] for r in results] == [[x.as_dict() for x in f] for f in want]
    assert [r["sequence"]["frames"] for r in results] == [1, 2, 3, 3, 3]
    status, out, _ = _vpr(capsys, "query", tmp_path / "map", *frames[:2], "--sequence", "3")
    assert status == 0 and "sequence of the last 2 frames" in out and "1. score " in out
    assert "place " not in out  # a map without place ids: the image is the place, printed once


def test_problems_with_the_map_or_its_input_are_one_line_and_exit_2(weights, images, tmp_path, capsys):
    folder = tmp_path / "map"
    assert _vpr(capsys, "build", folder, "--images", images[0].rsplit("/", 1)[0], "--model", MODEL, "--pretrained",
                weights, "--index", "flat")[0] == 0
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image at all")
    table = tmp_path / "short.csv"
    table.write_text("image,place\n000.png,1\n")
    cases = [
        (("query", tmp_path / "nowhere", images[0]), "no map folder at"),
        (("query", folder, bad), "cannot read image"),
        (("query", folder, images[0], "-k", "101"), "k must be an integer in 1..20"),
        (("info", tmp_path / "images"), "manifest.json is missing"),
        (("build", tmp_path / "m2", "--images", tmp_path / "images", "--model", "no_such_model"), "unknown model"),
        (("build", tmp_path / "m3", "--images", tmp_path / "images", "--model", MODEL, "--places", f"csv:{table}"),
         "has no row for the image 001.png"),
        (("build", tmp_path / "m4", "--images", tmp_path / "nothing", "--model", MODEL), "no such folder or file"),
        (("add", folder, "--images", tmp_path / "images", "--coords", "exif"), "no readable EXIF GPS position"),
    ]
    for argv, message in cases:
        status, _, err = _vpr(capsys, *argv)
        assert status == 2 and message in err and err.count("\n") == 1 and "Traceback" not in err, (argv, err)
    status, _, err = _vpr(capsys, "build", tmp_path / "m5", "--images", tmp_path / "images", "--model", MODEL,
                          "--places", "by-magic")
    assert status == 2 and "--places by-magic: use from-name or csv:FILE" in err
    assert main(["map", "frobnicate"]) == 2 and "unknown action 'frobnicate'" in capsys.readouterr().err
    assert Map.open(folder).count == 20  # nothing above changed the map


def test_place_ids_from_names_in_a_folder_and_in_a_list(tmp_path):
    from registry.maps import inputs

    flat = write_images(tmp_path / "flat", 2)
    for old, new in zip(flat, ("0042_a.png", "hall.png")):
        Path(old).rename(tmp_path / "flat" / new)
    files, root = inputs.list_images(str(tmp_path / "flat"))
    assert inputs.places_from_names(files, root) == ["0042", "hall"]
    nested = tmp_path / "site"
    for place in ("7", "12"):
        write_images(nested / place, 1)
    listing = tmp_path / "list.txt"
    listing.write_text("site/7/000.png\nsite/12/000.png\n")
    files, root = inputs.list_images(str(listing))
    assert root == nested and inputs.places_from_names(files, root) == [7, 12]  # all digits: integers
    assert inputs.places_from_names(files, root, as_int=False) == ["7", "12"]
    listing.write_text("flat/hall.png\n")
    files, root = inputs.list_images(str(listing))
    assert inputs.places_from_names(files, root) == ["hall"]


def test_utm_coordinates_from_a_csv_and_a_row_without_numbers(tmp_path):
    from registry.maps import MapError, inputs

    files = write_images(tmp_path / "imgs", 2)
    table = tmp_path / "utm.csv"
    table.write_text("image,utm_east,utm_north\n000.png,500000.5,4649776\n001.png,500010,4649780.25\n")
    np.testing.assert_array_equal(inputs.coords_from_csv(files, tmp_path / "imgs", str(table)),
                                  [[500000.5, 4649776.0], [500010.0, 4649780.25]])
    table.write_text("image,utm_east,utm_north\n000.png,east,4649776\n001.png,1,2\n")
    with pytest.raises(MapError, match="the row of 000.png has utm_east='east'.*two finite numbers"):
        inputs.coords_from_csv(files, tmp_path / "imgs", str(table))
    table.write_text("image,x,y\n000.png,1,2\n")
    with pytest.raises(MapError, match="neither lat,lon nor utm_east,utm_north"):
        inputs.coords_from_csv(files, tmp_path / "imgs", str(table))


def _named_images(folder: Path, names) -> None:
    """One image file at each relative path of `names` under `folder`."""
    for i, name in enumerate(names):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.move(write_images(folder.parent / "raw", 1, start=i)[0], folder / name)


def test_a_folders_images_are_built_and_added_in_natural_order(weights, tmp_path, capsys):
    shots, more = tmp_path / "shots", tmp_path / "more"
    _named_images(shots, ["img10.png", "img2.png", "Img3.png", "img1.png", "b/img2.png", "a/img10.png", "a/img9.png"])
    _named_images(more, ["x10.png", "x9.png", "x100.png"])
    folder = tmp_path / "map"
    status, _, err = _vpr(capsys, "build", folder, "--images", shots, "--model", MODEL, "--pretrained", weights,
                          "--index", "flat")
    assert status == 0, err
    assert _vpr(capsys, "add", folder, "--images", more)[0] == 0
    rows = [Path(p) for p in Map.open(folder).store.images]
    assert [p.relative_to(shots).as_posix() for p in rows[:7]] == \
        ["a/img9.png", "a/img10.png", "b/img2.png", "img1.png", "img2.png", "Img3.png", "img10.png"]
    assert [p.name for p in rows[7:]] == ["x9.png", "x10.png", "x100.png"]


def test_place_ids_from_a_csv_are_typed_the_same_in_build_and_add(weights, images, tmp_path, capsys):
    table = tmp_path / "places.csv"
    table.write_text("image,place\n" + "".join(f"{Path(p).name},{' 7 ' if i % 2 else '-3'}\n"
                                               for i, p in enumerate(images)))
    first, more = tmp_path / "first", tmp_path / "more"
    for target, part in ((first, images[:4]), (more, images[4:6])):
        target.mkdir()
        for p in part:
            shutil.copy(p, target)
    folder = tmp_path / "map"
    status, _, err = _vpr(capsys, "build", folder, "--images", first, "--model", MODEL, "--pretrained", weights,
                          "--places", f"csv:{table}", "--index", "flat")
    assert status == 0, err
    status, _, err = _vpr(capsys, "add", folder, "--images", more, "--places", f"csv:{table}")
    assert status == 0, err
    m = Map.open(folder)
    assert m.int_places and m.store.places == [-3, 7, -3, 7, -3, 7]


def test_a_places_csv_the_add_cannot_take_names_the_file_and_the_row_and_leaves_the_map(weights, images, tmp_path,
                                                                                       capsys):
    """Each refusal names the CSV (before: a place id that is not an integer was named without the file; two rows of
    one image that differ took the last silently; a place id of 2^70 was taken; a 5000-digit one was Python's
    ValueError and a 2 MB line csv's raw `Error`), and the map's files stay as they were."""
    folder = tmp_path / "map"
    table = tmp_path / "places.csv"
    table.write_text("image,place\n" + "".join(f"{i:03d}.png,{i // 4}\n" for i in range(20)))
    assert _vpr(capsys, "build", folder, "--images", tmp_path / "images", "--model", MODEL, "--pretrained", weights,
                "--index", "flat", "--places", f"csv:{table}")[0] == 0
    more = write_images(tmp_path / "more", 2, seed=3, start=20)
    before = {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
    good = ["020.png,5", "021.png,5"]
    cases = [(["020.png,nan", "021.png,5"], "the row of 020.png: this map's place ids are integers; 'nan' is not one"),
             (["020.png,5", "021.png,x7"], "the row of 021.png: this map's place ids are integers; 'x7' is not one"),
             ([*good, "021.png,6"], "two rows for the image '021.png' that differ (021.png,5 and 021.png,6)"),
             ([f"020.png,{2**70}", "021.png,5"], "the row of 020.png: this map's place ids are integers; "
                                                 f"'{2**70}' is not one (a whole number in the signed 64-bit range)"),
             (["020.png," + "9" * 5000, "021.png,5"], "the row of 020.png: this map's place ids are integers"),
             ([good[0], "021.png,5," + "x" * (2 << 20)], "line 3: not a CSV line this command reads (field larger")]
    for rows, message in cases:
        bad = tmp_path / "bad.csv"
        bad.write_text("\n".join(["image,place", *rows]) + "\n")
        status, _, err = _vpr(capsys, "add", folder, "--images", tmp_path / "more", "--places", f"csv:{bad}")
        assert status == 2 and f"{bad}" in err and message in err and "Traceback" not in err, err[:400]
        assert {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()} == before
    repeated = tmp_path / "repeated.csv"
    repeated.write_text("\n".join(["image,place", *good, good[0]]) + "\n")  # a row repeated as it is: taken once
    assert _vpr(capsys, "add", folder, "--images", tmp_path / "more", "--places", f"csv:{repeated}")[0] == 0
    assert Map.open(folder).store.places[20:] == [5, 5] and len(more) == 2
