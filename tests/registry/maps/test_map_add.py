"""Growing a map: add-then-query equals building all at once; a reader keeps its version until it reloads; a build
or an add killed by SIGKILL leaves the last committed map answering and a rerun finishes it; IVF-PQ grows without
retraining; sequence queries equal registry.evaluation.sequence.sequence_rankings on the same descriptors."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from map_helpers import HERE, MODEL, env, write_images

from registry.evaluation.sequence import SequenceSpec, sequence_rankings
from registry.maps import Map, MapError

pytest.importorskip("lance")
SCRIPT = str(HERE / "map_helpers.py")


def _results(m: Map, queries, k: int = 5):
    got = m.query(queries, k=k)
    return [[x.row for x in r] for r in got], np.array([[x.distance for x in r] for r in got])


def _kill(action: str, folder: Path, weights: str, die_after: int, files) -> None:
    run = subprocess.run([sys.executable, SCRIPT, action, str(folder), weights, str(die_after), *files], env=env(),
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == -9, run.stderr[-3000:]


def test_add_then_query_equals_building_all_at_once(weights, images, tmp_path):
    grown = Map.build(tmp_path / "grown", images[:12], model=MODEL, pretrained=weights, index="flat", chunk_size=5,
                      places=list(range(12)), progress=False)
    first = grown.version
    assert grown.add(images[12:], places=list(range(12, 20))) > first
    whole = Map.build(tmp_path / "whole", images, model=MODEL, pretrained=weights, index="flat", chunk_size=5,
                      places=list(range(20)), progress=False)
    rows, dists = _results(whole, images)
    assert _results(grown, images)[0] == rows
    np.testing.assert_allclose(_results(grown, images)[1], dists, atol=1e-6)
    np.testing.assert_array_equal(grown.database(), whole.database())
    assert grown.store.images == whole.store.images and grown.store.places == list(range(20))
    assert [v["added"] for v in Map.open(tmp_path / "grown").info()["versions"]] == [12, 8]


def test_a_reader_keeps_its_version_until_it_reloads(weights, images, tmp_path):
    Map.build(tmp_path / "map", images[:10], model=MODEL, pretrained=weights, index="hnsw", progress=False)
    reader = Map.open(tmp_path / "map")
    before = _results(reader, images[10:14], k=3)
    writer = Map.open(tmp_path / "map")
    writer.add(images[10:])
    assert reader.count == 10 and _results(reader, images[10:14], k=3)[0] == before[0]
    assert not Map.open(tmp_path / "map").reload_if_changed()
    runtime = reader.runtime
    assert reader.reload_if_changed() and reader.count == 20 and reader.version == writer.version
    assert reader.runtime is runtime  # same model files: the runtime is kept, only store and index are read again
    assert [r[0] for r in _results(reader, images[10:14], k=3)[0]] == [10, 11, 12, 13]  # hnsw grew with them


def test_a_killed_add_leaves_the_last_commit_and_a_rerun_finishes_it(weights, images, tmp_path):
    folder = tmp_path / "map"
    m = Map.build(folder, images[:10], model=MODEL, pretrained=weights, index="flat", chunk_size=4, progress=False)
    before = _results(m, images, k=4)
    _kill("add", folder, weights, 1, images[10:])  # chunk 2 (rows 8..11) committed, killed in chunk 3
    import lance

    assert lance.dataset(str(folder / "store")).version > m.version  # the killed add committed store versions
    after_kill = Map.open(folder)
    assert after_kill.version == m.version and after_kill.count == 10
    assert _results(after_kill, images, k=4)[0] == before[0]
    after_kill.add(images[10:])
    whole = Map.build(tmp_path / "whole", images, model=MODEL, pretrained=weights, index="flat", chunk_size=4,
                      progress=False)
    assert Map.open(folder).count == 20 and _results(Map.open(folder), images)[0] == _results(whole, images)[0]


def test_an_add_of_other_images_after_a_killed_add_starts_from_the_last_commit(weights, images, tmp_path):
    folder = tmp_path / "map"
    Map.build(folder, images[:10], model=MODEL, pretrained=weights, index="flat", chunk_size=4, progress=False)
    _kill("add", folder, weights, 1, images[10:])
    m = Map.open(folder)
    m.add(images[16:])
    assert m.count == 14 and m.store.images == images[:10] + images[16:]
    assert [x.row for x in m.query([images[17]], k=1)[0]] == [11]


def test_a_killed_build_is_finished_by_running_it_again(weights, images, tmp_path):
    folder = tmp_path / "map"
    _kill("build", folder, weights, 2, images)  # chunks 0 and 1 committed, killed in chunk 2
    with pytest.raises(MapError, match="manifest.json is missing"):
        Map.open(folder)
    m = Map.build(folder, images, model=MODEL, pretrained=weights, index="flat", chunk_size=4, progress=False)
    whole = Map.build(tmp_path / "whole", images, model=MODEL, pretrained=weights, index="flat", chunk_size=4,
                      progress=False)
    np.testing.assert_array_equal(m.database(), whole.database())
    assert _results(m, images)[0] == _results(whole, images)[0]


def test_added_place_ids_and_coordinates_must_match_the_map(weights, images, tmp_path):
    m = Map.build(tmp_path / "map", images[:6], model=MODEL, pretrained=weights, index="flat",
                  places=[1, 1, 2, 2, 3, 3], progress=False)
    with pytest.raises(MapError, match="place ids are integers; 'kitchen' is not one"):
        m.add(images[6:8], places=["kitchen", "hall"])
    with pytest.raises(MapError, match="has no coordinates"):
        m.add(images[6:8], places=[4, 4], coords=[[0, 0], [1, 1]])
    m.add(images[6:8], places=["4", 5])
    assert m.store.places[-2:] == [4, 5] and m.count == 8


def test_place_ids_are_typed_by_one_rule_in_a_build_and_an_add(weights, images, tmp_path):
    """Integers (negative ones too) and integer text with spaces around it are integer ids in a build and in an
    add alike; in a map of string ids the same values are their stripped text."""
    ints = Map.build(tmp_path / "ints", images[:4], model=MODEL, pretrained=weights, index="flat",
                     places=[-3, " 7 ", "-3", np.int64(12)], progress=False)
    assert ints.int_places and ints.store.places == [-3, 7, -3, 12]
    ints.add(images[4:7], places=[" -3 ", 7, "12"])
    assert ints.store.places[4:] == [-3, 7, 12] and Map.open(tmp_path / "ints").store.places[4:] == [-3, 7, 12]
    with pytest.raises(MapError, match="place ids are integers; '7.5' is not one"):
        ints.add(images[7:8], places=["7.5"])
    with pytest.raises(MapError, match="place ids are integers or strings, got True"):
        ints.add(images[7:8], places=[True])
    words = Map.build(tmp_path / "words", images[:3], model=MODEL, pretrained=weights, index="flat",
                      places=[" hall ", " 7 ", -3], progress=False)
    assert not words.int_places and words.store.places == ["hall", "7", "-3"]
    words.add(images[3:5], places=[" 7 ", -3])
    assert words.store.places[3:] == ["7", "-3"]


def test_ivfpq_grows_without_retraining_and_auto_rebuilds_only_when_its_policy_changes_kind(
        weights, tmp_path, monkeypatch):
    from registry.evaluation import index_spec

    monkeypatch.setattr(index_spec, "AUTO_FLAT_MIN", 1)
    monkeypatch.setattr(index_spec, "AUTO_FLAT_WORK", 64 * 32)  # exact up to 64 images of 32 dims
    images = write_images(tmp_path / "images", 330)
    m = Map.build(tmp_path / "map", images[:40], model=MODEL, pretrained=weights, index="auto", progress=False)
    assert m.info()["index"]["kind"] == "flat"
    m.add(images[40:300])  # 300 images: auto picks IVF-PQ now, so the index is built again
    assert m.info()["index"]["kind"] == "ivfpq" and m.index.ntotal == 300
    import faiss

    def centroids(index):
        ivf = faiss.extract_index_ivf(index.faiss_index)
        return faiss.downcast_index(ivf.quantizer).reconstruct_n(0, ivf.nlist)

    trained = centroids(m.index)
    m.add(images[300:])
    assert m.index.ntotal == 330 and m.info()["index"]["kind"] == "ivfpq"
    np.testing.assert_array_equal(centroids(m.index), trained)  # added, not retrained
    assert m.query([images[320]], k=1)[0][0].row == 320  # the disk refine re-ranks with exact distances


def test_sequence_query_equals_sequence_rankings_on_the_same_descriptors(weights, images, tmp_path):
    m = Map.build(tmp_path / "map", images, model=MODEL, pretrained=weights, index="flat", progress=False)
    frames = write_images(tmp_path / "frames", 40, seed=5)  # more than one encode batch (32)
    got = m.sequence_query(frames, k=4, length=3)
    want = sequence_rankings(m.encode(frames), m.store.descriptors[:], 4, SequenceSpec(length=3))
    assert [[x.row for x in r] for r in got] == want.tolist()
    matcher = m.sequence_matcher(3, k=4)
    pushed = [matcher.push(d) for d in m.encode(frames)]
    assert pushed == got and len(matcher) == 3
    matcher.reset()
    assert len(matcher) == 0
    with pytest.raises(MapError, match="sequence length"):
        m.sequence_matcher(0)


def test_a_second_writer_is_refused_while_one_holds_the_map(weights, images, tmp_path):
    from registry.maps.building import writer_lock

    m = Map.build(tmp_path / "map", images[:6], model=MODEL, pretrained=weights, index="flat", progress=False)
    with writer_lock(tmp_path / "map"):
        with pytest.raises(MapError, match="another `vpr map build` or `vpr map add` is writing"):
            m.add(images[6:8])
        assert Map.open(tmp_path / "map").count == 6  # readers are not affected
    assert m.add(images[6:8]) and m.count == 8


def _map_files(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_an_add_refused_for_its_input_leaves_every_file_of_the_map_as_it_was(weights, images, tmp_path):
    """An image the add cannot read (before: refused once the store had a new, uncommitted version: its version hint
    rewritten, a manifest and a transaction added) and a map of integer ids given no place ids (before: the new rows
    got their image paths, strings, as places) are refused before the store is touched."""
    from registry.datasets.images import ImageReadError

    m = Map.build(tmp_path / "map", images[:6], model=MODEL, pretrained=weights, index="flat", chunk_size=4,
                  places=[1, 1, 2, 2, 3, 3], progress=False)
    data = Path(images[7]).read_bytes()
    half = tmp_path / "half.png"
    half.write_bytes(data[: len(data) // 2])
    before = _map_files(tmp_path / "map")
    with pytest.raises(ImageReadError, match="half.png"):
        m.add([images[6], str(half)], places=[4, 4], progress=False)
    assert _map_files(tmp_path / "map") == before
    with pytest.raises(MapError, match="place ids are integers: give an integer place id for each new image"):
        m.add(images[6:8], progress=False)
    assert _map_files(tmp_path / "map") == before and Map.open(tmp_path / "map").count == 6
    m.add(images[6:8], places=[4, 4], progress=False)
    assert Map.open(tmp_path / "map").store.places[6:] == [4, 4]
