"""Adding images to a built map: the store's metadata extended to the longer image list (one commit), the new rows
extracted one committed chunk at a time, the index grown into a new index/v<version> folder, the manifest committed
last. Until that last write every reader, and every later open, sees the version before; a stopped add is finished
by running it again (or undone by an add of other images: the store is first restored to the committed version)."""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any, List, Optional, Sequence

import numpy as np

from ..evaluation.index import IndexSpec, PlaceIndex, choose_index
from ..evaluation.store import INT_PLACES, MapStore, _images_hash, _lance
from ..evaluation.store_extract import extract_to_store
from .building import new_index, writer_lock
from .inputs import typed_ids
from .manifest import INDEX_DIR, STORE_DIR, MapError, read_manifest, store_facts, version_entry, write_manifest

KEEP_INDEXES = 2  # index folders kept: the committed one and the one before (readers still on it)


def add_images(m: Any, images: List[str], places: Optional[Sequence[Any]], coords: Optional[Any],
               progress: bool) -> None:
    """Map.add's work (see there)."""
    folder = m.folder
    if places is not None and len(places) != len(images):
        raise MapError(f"{len(places)} places for {len(images)} images")
    with writer_lock(folder):
        manifest = read_manifest(folder)  # the newest commit: another process may have added since m was opened
        base = MapStore(folder / STORE_DIR, version=manifest["store"]["version"])
        all_images = base.images + images
        all_places = _merged_places(base, places, len(images))
        all_coords = _merged_coords(base, coords, len(images))
        _extend_store(folder / STORE_DIR, base, all_images)
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


def _merged_places(base: MapStore, places: Optional[Sequence[Any]], n: int) -> Optional[List[Any]]:
    """Place ids of every row (old rows as stored, new rows as given), typed as the map's (`typed_ids`)."""
    old = base.places  # built from the store's rows on each access: once here
    int_map = base.meta.get("place_type") == INT_PLACES
    has_places = int_map or any(p != i for p, i in zip(old, base.images))
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


def _extend_store(folder: Path, base: MapStore, all_images: List[str]) -> None:
    """Commit the store's metadata for the longer image list (extract_to_store then fills the new rows); a stopped
    add of these same images is left to resume, one of other images is undone first."""
    lance, _ = _lance()
    want = _images_hash(all_images)
    latest = MapStore(folder)
    if latest.version != base.version:
        if latest.meta.get("images_sha256") == want and latest.count == len(all_images):
            return
        lance.dataset(str(folder), version=base.version).restore()
    meta = {**base.meta, "count": len(all_images), "images_sha256": want}
    lance.dataset(str(folder)).update_schema_metadata({"clusvpr_map": json.dumps(meta)}, replace=True)


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
