"""Adding images to a built map: the store's metadata extended to the longer image list (one commit), the new rows
extracted one committed chunk at a time, the index grown into a new index/v<version> folder, the manifest committed
last. Until that last write every reader, and every later open, sees the version before; a stopped add is finished
by running it again (or undone by an add of other images: the store is first restored to the committed version).
An add refused for its input (place ids, coordinates, an image it cannot read) is refused before the store is
touched, so it leaves every file of the map as it was."""
from __future__ import annotations

import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..datasets.images import open_rgb
from ..evaluation.index import IndexSpec, PlaceIndex, choose_index
from ..evaluation.store import INT_PLACES, MapStore, extend_store
from ..evaluation.store_extract import extract_to_store
from .building import new_index, writer_lock
from .inputs import typed_ids
from .manifest import INDEX_DIR, STORE_DIR, MapError, read_manifest, store_facts, version_entry, write_manifest

KEEP_INDEXES = 2  # index folders kept: the committed one and the one before (readers still on it)


def add_images(m: Any, images: List[str], places: Optional[Sequence[Any]], coords: Optional[Any],
               progress: bool) -> Tuple[Dict[str, Any], MapStore, PlaceIndex]:
    """Map.add's work (see there): (the committed manifest, the store at its version, the grown index), the store
    and the index as this add made them (nothing is read back)."""
    folder = m.folder
    if places is not None and len(places) != len(images):
        raise MapError(f"{len(places)} places for {len(images)} images")
    with writer_lock(folder):
        manifest = read_manifest(folder)  # the newest commit: another process may have added since m was opened
        version = manifest["store"]["version"]
        base = m.store if m.version == version else MapStore(folder / STORE_DIR, version=version)
        all_images = base.images + images
        all_places = _merged_places(base, places, len(images))
        all_coords = _merged_coords(base, coords, len(images))
        check_images(images)  # a bad image is refused here, before the store is touched: the map stays as it was
        extend_store(base, all_images)
        store = extract_to_store(m.runtime, all_images, folder / STORE_DIR, chunk_size=base.chunk_size,
                                 places=all_places, coords=all_coords, device="cpu", progress=progress)
        index = _grown_index(folder, manifest, base, store)
        name = f"{INDEX_DIR}/v{store.version}"
        index.save(folder / name)
        manifest = {**manifest, "store": store_facts(store), "versions": manifest["versions"] +
                    [version_entry(store, len(images))],
                    "index": {**manifest["index"], "spec": asdict(index.spec), "folder": name}}
        write_manifest(folder, manifest)
        _drop_old_indexes(folder, name)
    return manifest, store, index


def check_images(images: Sequence[str]) -> None:
    """Decode every image to be added (as the extraction will), so that one it cannot read is refused with its
    ImageReadError before the add commits anything: a refused add leaves every file of the map as it was. Costs one
    more decode per added image (not per map image)."""
    for image in images:
        open_rgb(image)


def _merged_places(base: MapStore, places: Optional[Sequence[Any]], n: int) -> Optional[List[Any]]:
    """Place ids of every row (old rows as stored, new rows as given), typed as the map's (`typed_ids`)."""
    old = base.places  # built from the store's rows on each access: once here
    int_map = base.meta.get("place_type") == INT_PLACES
    has_places = int_map or any(p != i for p, i in zip(old, base.images))
    if places is None and int_map:  # a new row's place would be its image path: a string in a map of integers
        raise MapError("this map's place ids are integers: give an integer place id for each new image (places=, "
                       "--places csv:FILE or from-name, the 'places' field of POST /v1/map/images)")
    if places is None:
        return None if not has_places else list(old) + [None] * n
    return (list(old) if has_places else [None] * base.count) + typed_ids(places, as_int=int_map)


def _merged_coords(base: MapStore, coords: Optional[Any], n: int) -> Optional[np.ndarray]:
    old = base.coords
    if (old is None) != (coords is None):
        have = "has coordinates: give coords for the new images too" if old is not None else \
            "has no coordinates: add images without coords (or build a new map with coordinates for all)"
        raise MapError(f"this map {have}")
    if old is None:
        return None
    new = np.asarray(coords, dtype=np.float64)
    if new.shape != (n, 2) or not np.isfinite(new).all():
        raise MapError(f"coords must be {n} finite (x, y) pairs, one per new image, got shape {new.shape}")
    return np.concatenate([old, new])


def _grown_index(folder: Path, manifest: dict, base: MapStore, store: MapStore) -> PlaceIndex:
    """The committed index with the new rows added (no retraining), or a new index over every row where the map
    asked for `auto` and its policy picks another kind at the new size."""
    requested = IndexSpec(**manifest["index"]["requested"])
    current = manifest["index"]["spec"]["kind"]
    if requested.kind == "auto" and choose_index(store.count, store.dim, requested.memory_budget).kind != current:
        return new_index(store, requested)
    index = PlaceIndex.load(folder / manifest["index"]["folder"])
    new_rows = np.asarray(store.descriptors[base.count : store.count])
    index.add(new_rows, places=store.places[base.count :])
    return index


def _drop_old_indexes(folder: Path, keep: str) -> None:
    """Remove index folders older than the KEEP_INDEXES newest: a reader one version behind keeps its folder (a disk
    refine reads vectors.f16 from there); one further behind holds its faiss index in memory, and its vectors file
    only while it is mapped, so such a reader calls reload_if_changed() before it queries again."""
    versions = sorted((int(p.name[1:]), p) for p in (folder / INDEX_DIR).glob("v*") if p.name[1:].isdigit())
    for _, path in versions[:-KEEP_INDEXES]:
        if path != folder / keep:
            shutil.rmtree(path, ignore_errors=True)
