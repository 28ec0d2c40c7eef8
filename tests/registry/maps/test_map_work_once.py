"""A map's work is done once: a build hands back the map it made (no second hashing of the weights, no re-reading
of the store or the index), an add opens the store only where extraction must and keeps the index it grew, and
info() walks the folders once per version. Each count is taken by wrapping the function that does the work."""
from __future__ import annotations

import inspect

import pytest
from map_helpers import MODEL

import registry.maps.building
import registry.maps.manifest
from registry.evaluation.index import PlaceIndex
from registry.evaluation.store import MapStore
from registry.maps import Map
from registry.runtimes.eager import TorchRuntime

pytest.importorskip("lance")


def _count(monkeypatch, owner, name: str) -> list:
    """Wrap owner.name (a function, method or classmethod) so that each call appends to the returned list."""
    calls: list = []
    original = getattr(owner, name)

    def counting(*args, **kwargs):
        calls.append(name)
        return original(*args, **kwargs)

    is_classmethod = isinstance(inspect.getattr_static(owner, name), classmethod)
    monkeypatch.setattr(owner, name, classmethod(lambda cls, *a, **k: counting(*a, **k)) if is_classmethod
                        else counting)
    return calls


def _counters(monkeypatch) -> dict:
    return {"fingerprint": _count(monkeypatch, TorchRuntime, "fingerprint"),  # the weights hashed for the config hash
            "sha256_file": _count(monkeypatch, registry.maps.manifest, "sha256_file"),  # the files the manifest pins
            "store_open": _count(monkeypatch, MapStore, "__init__"),
            "index_load": _count(monkeypatch, PlaceIndex, "load"),
            "folder_walk": _count(monkeypatch, registry.maps.building, "folder_bytes")}


def _sizes(counters: dict) -> dict:
    out = {name: len(calls) for name, calls in counters.items()}
    for calls in counters.values():
        calls.clear()
    return out


def test_build_returns_the_map_it_made_without_hashing_or_reading_it_again(weights, images, tmp_path, monkeypatch):
    counters = _counters(monkeypatch)
    built = Map.build(tmp_path / "map", images[:6], model=MODEL, pretrained=weights, index="flat", progress=False)
    files = len(built.manifest["files"])
    # the config hash once (the store's), each pinned file hashed once (the manifest's record), no index read back
    assert files == 2 and _sizes(counters) == {"fingerprint": 1, "sha256_file": files, "store_open": 2,
                                               "index_load": 0, "folder_walk": 0}
    opened = Map.open(tmp_path / "map")  # what an open costs, for comparison: each check once
    assert _sizes(counters) == {"fingerprint": 1, "sha256_file": files, "store_open": 1, "index_load": 1,
                                "folder_walk": 0}
    assert [x.row for x in built.query([images[4]], k=2)[0]] == [x.row for x in opened.query([images[4]], k=2)[0]]
    assert built.info() == opened.info() and built.version == opened.version


def test_an_add_opens_the_store_only_to_extract_and_keeps_the_index_it_grew(weights, images, tmp_path, monkeypatch):
    m = Map.build(tmp_path / "map", images[:6], model=MODEL, pretrained=weights, index="flat", progress=False)
    counters = _counters(monkeypatch)
    version = m.add(images[6:9], progress=False)
    # extract_to_store opens the extended store to find its missing chunks and returns the filled one; the committed
    # index is read once to be grown, and the grown one is kept (not loaded back from its new folder)
    assert _sizes(counters) == {"fingerprint": 1, "sha256_file": 0, "store_open": 2, "index_load": 1,
                                "folder_walk": 0}
    fresh = Map.open(tmp_path / "map")
    assert version == fresh.version and m.count == fresh.count == 9 and m.index.ntotal == 9
    assert [x.row for x in m.query([images[7]], k=3)[0]] == [x.row for x in fresh.query([images[7]], k=3)[0]]


def test_info_walks_the_folders_once_per_version(weights, images, tmp_path, monkeypatch):
    m = Map.build(tmp_path / "map", images[:6], model=MODEL, pretrained=weights, index="flat", progress=False)
    walks = _count(monkeypatch, registry.maps.building, "folder_bytes")
    first = m.info()
    first["count"] = -1  # a caller's copy: the map's own facts are not changed through it
    assert m.info()["count"] == 6 and len(walks) == 2  # the store and the index folder, once
    m.add(images[6:8], progress=False)
    assert m.info()["count"] == 8 and m.info()["version"] == m.version and len(walks) == 4
