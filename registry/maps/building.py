"""Building a map folder: the model and runtime saved into it, the images extracted into its store (one committed
chunk at a time, resumable), the index built and saved, the manifest committed last. One writer at a time (a lock
file the system releases when the writer dies)."""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from .._util.atomic import atomic_path
from .._util.jsonio import BoundedJSONError, read_json
from ..evaluation.index import IndexSpec, PlaceIndex
from ..evaluation.store import MapStore, StoreMismatchError
from ..evaluation.store_damage import StoreDamagedError
from ..evaluation.store_extract import extract_to_store
from . import engine
from .manifest import INDEX_DIR, MANIFEST, STORE_DIR, MapBusyError, MapError, new_manifest, write_manifest

LOCK = ".lock"
BUILD_ARGS = "build.json"  # what a build was started with: a rerun must ask for the same map to resume it


@contextlib.contextmanager
def writer_lock(folder: Path) -> Iterator[None]:
    """Hold the map's writer lock (flock on folder/.lock) or raise MapBusyError when another build or add holds it."""
    import fcntl

    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise MapBusyError(f"another `vpr map build` or `vpr map add` is writing {folder} right now: wait for it "
                               "to finish (readers are not affected)") from None
        yield
    finally:
        os.close(fd)


def folder_bytes(folder: Path) -> int:
    """Bytes of the files under `folder` (0 when it does not exist)."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def _check_build_args(folder: Path, args: dict) -> Optional[str]:
    """Refuse a rerun that asks for another map than the stopped build did; the model source that build recorded
    (None for a new build)."""
    path = folder / BUILD_ARGS
    if not path.is_file():
        return None
    try:
        before = read_json(path, fix=f"delete {folder} and build again")
    except BoundedJSONError as err:
        raise MapError(str(err)) from None
    source = before.pop("source", None) if isinstance(before, dict) else None
    if before != args:
        changed = sorted(k for k in set(before) | set(args) if before.get(k) != args.get(k)) \
            if isinstance(before, dict) else ["all"]
        raise MapError(f"{folder} holds a stopped build with other {', '.join(changed)} (started with "
                       f"{json.dumps(before)[:300]}): rerun it with the same arguments to finish it, or delete "
                       "the folder to build another map")
    return source if isinstance(source, str) else None


def _record_build_args(folder: Path, args: dict, source: str) -> None:
    with atomic_path(folder / BUILD_ARGS) as tmp:
        tmp.write_text(json.dumps({**args, "source": source}, sort_keys=True) + "\n")


def build_map(folder: Path, images: List[str], model: str, pretrained: Any, runtime: str,
              places: Optional[Sequence[Any]], coords: Optional[Any], requested: IndexSpec, chunk_size: int,
              progress: bool) -> Tuple[Dict[str, Any], Any, MapStore, PlaceIndex, Any]:
    """Map.build's work (see there): (the committed manifest, the runtime, the store, the index, the model), as
    this build made them (nothing is read back)."""
    if (folder / MANIFEST).exists():
        raise MapError(f"{folder} is a map already: add images with `vpr map add {folder} --images ...` (Map.add), "
                       "or build into a new folder")
    if runtime not in engine.MAP_RUNTIMES:
        raise MapError(f"unknown runtime {runtime!r} for a map: choose one of {', '.join(engine.MAP_RUNTIMES)}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise MapError(f"chunk_size must be an integer >= 1, got {chunk_size!r}")
    label = engine.pretrained_label(pretrained)
    with writer_lock(folder):
        args = {"model": model, "pretrained": label, "runtime": runtime, "chunk_size": chunk_size,
                "images": len(images)}  # what the store depends on: the index may change on a rerun
        recorded = _check_build_args(folder, args)
        net, source = engine.model_for_build(folder, model, pretrained, recorded)
        if recorded is None:
            _record_build_args(folder, args, source)
        rt = engine.runtime_for_build(folder, runtime, net, images)
        try:
            store = extract_to_store(rt, images, folder / STORE_DIR, chunk_size=chunk_size, places=places,
                                     coords=coords, device="cpu", progress=progress)
        except StoreMismatchError as err:
            raise MapError(f"{err} ({folder} holds a stopped build of other images: rerun it with the same images "
                           "to finish it, or delete the folder)") from None
        except StoreDamagedError as err:
            raise MapError(str(err)) from None
        index = new_index(store, requested)
        index.save(folder / INDEX_DIR / f"v{store.version}")
        manifest = new_manifest(folder, model, label, source, rt, store, index, requested, chunk_size)
        write_manifest(folder, manifest)
        (folder / BUILD_ARGS).unlink(missing_ok=True)
    return manifest, rt, store, index, net


def new_index(store: MapStore, requested: IndexSpec) -> PlaceIndex:
    """A PlaceIndex of every row of `store` (its descriptors and typed place ids, in row order). The rows are added
    as rows, not as the store: the manifest, not the index, pins the store version the map reads."""
    index = PlaceIndex(store.dim, requested)
    try:
        index.add(store.descriptors, places=store.places)  # read in chunks when the map is large
    except ValueError as err:  # an index kind that cannot be trained on this few images
        raise MapError(f"cannot build the {requested.kind} index of {store.count} images: {err}; the extracted store "
                       f"is kept, rerun with another --index (auto picks one that fits)") from None
    return index
