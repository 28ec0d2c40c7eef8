"""A map folder's manifest.json: what the map is (model, weights source, config hash, runtime and the sha256 of the
files it runs on, index spec, store version, history of versions). It is written last and atomically by every build
and add, so a reader that reads it sees one committed version whole; anything wrong with it is a MapError naming the
file and the fix."""
from __future__ import annotations

import json
import os
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, Union

from .._util.atomic import atomic_path
from .._util.files import sha256_file
from .._util.jsonio import BoundedJSONError, read_json

PathLike = Union[str, os.PathLike]
FORMAT = 1
MANIFEST = "manifest.json"
MODEL_DIR = "model"  # the torch model's Hub layout (config.json, model.safetensors): the map's own copy
RUNTIME_FILE = "runtime.onnx"  # the onnx / onnx-int8 graph the map runs on
STORE_DIR = "store"  # the Lance map store
INDEX_DIR = "index"  # index/v<store version>: one saved PlaceIndex per committed version
REBUILD = "rebuild the map with `vpr map build` (its images are listed in the store)"
_FIELDS = {"format": int, "model": str, "architecture": str, "pretrained": str, "source": str, "config_hash": str,
           "runtime": str, "files": dict, "index": dict, "store": dict, "versions": list, "chunk_size": int,
           "has_coords": bool}


class MapError(ValueError):
    """A map folder that is missing, damaged or inconsistent, or a request it cannot answer: the message names the
    file (or the value) and the fix."""


class MapBusyError(MapError):
    """Another build or add holds the map's writer lock: the same call can succeed once it is done."""


def read_manifest(folder: PathLike) -> Dict[str, Any]:
    """folder/manifest.json parsed (bounded) and its fields checked for type; MapError naming the file otherwise."""
    path = Path(folder) / MANIFEST
    if not Path(folder).is_dir():
        raise MapError(f"no map folder at {folder}: build one with `vpr map build {folder} --images DIR --model NAME`")
    if not path.is_file():
        raise MapError(f"{path} is missing: {folder} is not a finished map (a build that stopped before its end "
                       "leaves none; run the same `vpr map build` again to finish it)")
    try:
        manifest = read_json(path, fix=REBUILD)
    except BoundedJSONError as err:
        raise MapError(str(err)) from None
    if not isinstance(manifest, dict):
        raise MapError(f"{path} is not a JSON object: it was damaged; {REBUILD}")
    for name, kind in _FIELDS.items():
        value = manifest.get(name)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise MapError(f"{path}: field {name!r} must be a {kind.__name__}, got {repr(value)[:60]}: the file was "
                           f"damaged or written by another program; {REBUILD}")
    if manifest["format"] != FORMAT:
        raise MapError(f"{path} is a map of format {manifest['format']}, this package reads format {FORMAT}; "
                       f"{REBUILD} with this version")
    store = manifest["store"]
    for name in ("version", "count", "dim"):
        if isinstance(store.get(name), bool) or not isinstance(store.get(name), int) or store[name] < 1:
            raise MapError(f"{path}: store.{name} must be an integer >= 1, got {repr(store.get(name))[:40]}; {REBUILD}")
    if not isinstance(manifest["index"].get("folder"), str) or not isinstance(manifest["index"].get("spec"), dict):
        raise MapError(f"{path}: index must name its folder and spec; {REBUILD}")
    return manifest


def write_manifest(folder: PathLike, manifest: Dict[str, Any]) -> Path:
    """manifest.json written atomically (beside it, fsynced, renamed): the commit point of a build or an add."""
    path = Path(folder) / MANIFEST
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return path


def check_files(folder: Path, manifest: Dict[str, Any]) -> None:
    """Every file the manifest records a sha256 for is there and unchanged (the model weights, the runtime graph)."""
    for name, want in manifest["files"].items():
        path = folder / name
        if ".." in Path(name).parts or Path(name).is_absolute():
            raise MapError(f"{folder / MANIFEST} names the file {name!r} outside the map folder; {REBUILD}")
        if not path.is_file():
            raise MapError(f"{path} is missing: the map runs on it; restore it or {REBUILD}")
        if sha256_file(path) != want:
            raise MapError(f"{path} does not match the sha256 in {folder / MANIFEST}: it was modified or damaged "
                           f"after the map was built; restore it or {REBUILD}")


def new_manifest(folder: Path, model: str, pretrained: str, source: str, runtime: Any, store: Any, index: Any,
                 requested: Any, chunk_size: int) -> Dict[str, Any]:
    """The manifest of a freshly built map (version history of one entry)."""
    files = {f"{MODEL_DIR}/{name}": sha256_file(folder / MODEL_DIR / name)
             for name in ("config.json", "model.safetensors") if (folder / MODEL_DIR / name).is_file()}
    if runtime.kind != "torch":
        files[RUNTIME_FILE] = sha256_file(folder / RUNTIME_FILE)
    return {"format": FORMAT, "model": model, "architecture": str(runtime.config.get("architecture", model)),
            "pretrained": pretrained, "source": source, "config_hash": store.meta["config_hash"],
            "runtime": runtime.kind, "files": files, "chunk_size": chunk_size,
            "has_coords": bool(store.meta.get("coords")),
            "index": {"requested": asdict(requested), "spec": asdict(index.spec),
                      "folder": f"{INDEX_DIR}/v{store.version}"},
            "store": store_facts(store), "versions": [version_entry(store, store.count)]}


def store_facts(store: Any) -> Dict[str, Any]:
    return {"folder": STORE_DIR, "version": store.version, "count": store.count, "dim": store.dim,
            "store_id": store.meta.get("store_id")}


def version_entry(store: Any, added: int) -> Dict[str, Any]:
    return {"version": store.version, "count": store.count, "added": added,
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}
