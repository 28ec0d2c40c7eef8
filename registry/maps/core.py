"""Map: a folder of your own images to localize new frames against, over the Lance map store and a PlaceIndex.

    m = Map.build("site_map", images, model="clusvpr_vgg16", pretrained=True, runtime="onnx-int8", places=places)
    m = Map.open("site_map")          # read-only, the last committed version
    m.query(["frame.jpg"], k=5)       # [[Match(rank=1, row=..., place=..., distance=..., image=..., coords=...)]]

The folder holds manifest.json (written last, atomically: the commit point), model/ (the model's own copy),
runtime.onnx (onnx / onnx-int8 maps), store/ (the Lance store; every add is a new store version) and
index/v<version>/ (one saved PlaceIndex per version). A reader opens the store at the version its manifest names,
so an add in another process is seen only once committed, and only after `reload_if_changed()`.
"""
from __future__ import annotations

import copy
import os
import threading
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

from ..evaluation.index import IndexFileError, IndexSpec, PlaceIndex
from ..evaluation.sequence import distance_column
from ..evaluation.store import INT_PLACES, MapStore, StoreMismatchError
from ..evaluation.store_damage import StoreDamagedError
from . import engine
from .manifest import MANIFEST, REBUILD, STORE_DIR, MapError, check_files, read_manifest
from .match import Match

PathLike = Union[str, os.PathLike]
MAX_K = 100
ENCODE_BATCH = 32  # images per runtime call where a call may hold many (a route, a command line)
DEFAULT_CHUNK = 256
_STORE_ERRORS = (FileNotFoundError, StoreMismatchError, StoreDamagedError)


def image_paths(images: Sequence[PathLike]) -> List[str]:
    """Image paths as the store records them: absolute (symbolic links kept), as strings."""
    paths = [os.path.abspath(os.fspath(p)) for p in images]
    if not paths:
        raise MapError("no images given: pass at least one image file")
    return paths


def index_spec(index: Union[str, IndexSpec]) -> IndexSpec:
    """An IndexSpec from a kind name ('auto', 'flat', 'ivfpq', 'hnsw', 'pca') or a spec."""
    if isinstance(index, IndexSpec):
        return index
    try:
        return IndexSpec(str(index))
    except ValueError as err:
        raise MapError(f"index: {err}") from None


class Map:
    """A built map at one committed version (see the module docstring); `build` and `open` make one."""

    def __init__(self, folder: Path, manifest: Dict[str, Any], runtime: Any, store: MapStore, index: PlaceIndex,
                 model: Any = None) -> None:
        self.folder, self.manifest, self.runtime, self.store, self.index = folder, manifest, runtime, store, index
        self._model = model
        self._model_lock = threading.Lock()
        self._places = store.places
        self._images = store.images
        coords = store.coords
        self._coords = None if coords is None else [tuple(map(float, c)) for c in coords]
        self._database: Optional[np.ndarray] = None
        self._info: Optional[Dict[str, Any]] = None

    # ------------------------------------------------------------------------------------------------ build / open
    @classmethod
    def build(cls, folder: PathLike, images: Sequence[PathLike], model: str = "clusvpr_vgg16",
              pretrained: Any = True, runtime: str = "torch", places: Optional[Sequence[Any]] = None,
              coords: Optional[Any] = None, index: Union[str, IndexSpec] = "auto", chunk_size: int = DEFAULT_CHUNK,
              progress: bool = True) -> "Map":
        """Extract `images` into a new map at `folder` (one committed chunk at a time: rerunning a stopped build
        finishes it), build and save its index, then commit the manifest. `places`: one id per image, typed as
        every add types them (registry.maps.inputs.typed_ids: integers, or integer text such as ' 7 ' or '-3', when
        every id is one, else stripped strings); `coords`: (N, 2). `runtime`: torch, onnx or onnx-int8 (the graph
        is kept in the map)."""
        from .building import build_map
        from .inputs import typed_ids

        folder = Path(folder)
        manifest, rt, store, built, net = build_map(folder, image_paths(images), model, pretrained, runtime,
                                                    None if places is None else typed_ids(places), coords,
                                                    index_spec(index), chunk_size, progress)
        return cls(folder, manifest, rt, store, built, net if runtime == "torch" else None)

    @classmethod
    def open(cls, folder: PathLike) -> "Map":
        """The map's last committed version, read-only; MapError naming the file and the fix on anything wrong."""
        folder = Path(folder)
        manifest = read_manifest(folder)
        check_files(folder, manifest)
        model = None
        if manifest["runtime"] == "torch":
            model = engine.load_model(folder, manifest["model"], manifest["source"])
        runtime = engine.open_runtime(folder, manifest["runtime"], model)
        store = _open_store(folder, manifest)
        engine.check_config_hash(folder, runtime, manifest, store.meta)
        return cls(folder, manifest, runtime, store, _open_index(folder, manifest, store.count), model)

    def reload_if_changed(self) -> bool:
        """Re-open this map when another process has committed a newer version; whether it did."""
        manifest = read_manifest(self.folder)
        if manifest["store"]["version"] == self.version:
            return False
        self._reopen(manifest)
        return True

    def _reopen(self, manifest: Dict[str, Any]) -> None:
        """Read the version `manifest` names: the same runtime where the model and runtime files are the ones this
        object runs on (an add changes only the store and the index), else the whole map opened again."""
        same = all(manifest[key] == self.manifest[key] for key in ("files", "config_hash", "runtime", "model"))
        if not same:
            self.__dict__.update(Map.open(self.folder).__dict__)
            return
        store = _open_store(self.folder, manifest)
        engine.check_config_hash(self.folder, None, manifest, store.meta)
        fresh = Map(self.folder, manifest, self.runtime, store, _open_index(self.folder, manifest, store.count),
                    self._model)
        self.__dict__.update(fresh.__dict__)

    def add(self, images: Sequence[PathLike], places: Optional[Sequence[Any]] = None,
            coords: Optional[Any] = None, progress: bool = True) -> int:
        """Append images as a new store version (resumable: rerunning a stopped add finishes it), grow the index
        (IVF-PQ adds without retraining; `auto` rebuilds only where its policy picks another kind for the new
        size), commit the manifest last; this object then reads the new version. Returns it."""
        self.__dict__.update(self.added(images, places, coords, progress).__dict__)
        return self.version

    def added(self, images: Sequence[PathLike], places: Optional[Sequence[Any]] = None,
              coords: Optional[Any] = None, progress: bool = True) -> "Map":
        """`add`, returning the map at the new version as a new object (on this one's runtime and model, with the
        store and the index the add made) while this object keeps reading its own version: a server swaps the new
        one in under its own lock."""
        from .growing import add_images

        manifest, store, index = add_images(self, image_paths(images), places, coords, progress)
        return Map(self.folder, manifest, self.runtime, store, index, self._model)

    # ------------------------------------------------------------------------------------------------ facts
    @property
    def model_name(self) -> str:
        return str(self.manifest["model"])

    @property
    def version(self) -> int:
        return int(self.manifest["store"]["version"])

    @property
    def int_places(self) -> bool:
        """Whether this map's place ids are integers (added ids must be too)."""
        return self.store.meta.get("place_type") == INT_PLACES

    @property
    def count(self) -> int:
        return int(self.store.count)

    @property
    def dim(self) -> int:
        return int(self.store.dim)

    def image_path(self, row: int) -> Path:
        """The database image of store row `row`; IndexError when there is no such row."""
        if isinstance(row, bool) or not isinstance(row, (int, np.integer)) or not 0 <= row < self.count:
            raise IndexError(f"row {row!r} is not in this map (rows 0..{self.count - 1})")
        return Path(self._images[int(row)])

    def info(self) -> Dict[str, Any]:
        """Size, versions, model, runtime, index and RAM / disk bytes per image (JSON-ready); computed on the first
        call (the folders' sizes, the index's bytes) and kept, as everything this object reads is one version."""
        from .building import folder_bytes

        if self._info is None:
            disk = folder_bytes(self.folder / STORE_DIR) + folder_bytes(self.folder / self.manifest["index"]["folder"])
            self._info = {
                "path": str(self.folder), "model": self.model_name, "architecture": self.manifest["architecture"],
                "pretrained": self.manifest["pretrained"], "source": self.manifest["source"],
                "config_hash": self.manifest["config_hash"], "runtime": self.manifest["runtime"],
                "count": self.count, "dim": self.dim, "version": self.version, "versions": self.manifest["versions"],
                "index": self.manifest["index"]["spec"], "ram_bytes_per_image": self.index.memory_bytes() / self.count,
                "disk_bytes_per_image": disk / self.count, "has_coords": self._coords is not None}
        return copy.deepcopy(self._info)

    # ------------------------------------------------------------------------------------------------ queries
    def encode(self, images: Sequence[Any]) -> np.ndarray:
        """(N, dim) float32 descriptors of images (PIL images or paths), in one batched runtime call per input size."""
        return engine.encode_tensors(self.runtime, engine.preprocess(self.runtime, list(images)))

    def check_k(self, k: Any) -> int:
        """k as an int in 1..min(100, count); MapError otherwise."""
        top = min(MAX_K, self.count)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= top:
            raise MapError(f"k must be an integer in 1..{top} (at most {MAX_K}, and this map holds {self.count} "
                           f"images), got {k!r}")
        return int(k)

    def search(self, descriptors: np.ndarray, k: int) -> List[List[Match]]:
        """The k nearest map images of each descriptor row, nearest first."""
        k = self.check_k(k)
        q = np.atleast_2d(np.asarray(descriptors, dtype=np.float32))
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise MapError(f"descriptors must be {self.dim}-d (this map's), got shape {tuple(np.shape(descriptors))}: "
                           f"encode queries with the map's own model ({self.model_name}, Map.encode)")
        dists, ids = self.index.search(q, k)
        return [[self.match(rank, int(i), float(d)) for rank, (i, d) in enumerate(zip(row_ids, row_d), 1) if i >= 0]
                for row_ids, row_d in zip(ids, dists)]

    def query(self, images: Sequence[Any], k: int = 5) -> List[List[Match]]:
        """encode + search: the k best map images of each query image."""
        k = self.check_k(k)
        return self.search(self.encode(images), k)

    def match(self, rank: int, row: int, distance: float) -> Match:
        """The Match of store row `row` at `rank` with `distance`."""
        return Match(rank, row, self._places[row], distance, self._images[row],
                     None if self._coords is None else self._coords[row])

    def database(self) -> np.ndarray:
        """Every map descriptor as an (N, dim) float32 array in row order (read from the store once, then kept)."""
        if self._database is None:
            self._database = np.asarray(self.store.descriptors, dtype=np.float32)
        return self._database

    def distance_column(self, descriptor: np.ndarray) -> np.ndarray:
        """(count,) float32 squared L2 distances (2 - 2 cos) of one unit descriptor to every map image, in row
        order: a frame's column for sequence matching."""
        d = np.asarray(descriptor, dtype=np.float32).reshape(-1)
        if d.shape[0] != self.dim or not np.isfinite(d).all():
            raise MapError(f"a descriptor for this map is one finite {self.dim}-d row, got shape "
                           f"{tuple(np.shape(descriptor))}")
        return distance_column(d, self.database())

    def sequence_matcher(self, length: int = 10, k: int = 5):
        """A streaming SeqSLAM matcher over this map: `.push(descriptor)` -> the k best Matches by the sequence
        score over the last `length` frames pushed, `.reset()`."""
        from .sequence import MapSequenceMatcher

        return MapSequenceMatcher(self, length, self.check_k(k))

    def sequence_query(self, frames: Sequence[Any], k: int = 5, length: int = 10) -> List[List[Match]]:
        """Ordered frames (images or paths): per frame, the k best map images by the sequence score over the last
        `length` frames up to it."""
        matcher = self.sequence_matcher(length, k)
        frames = list(frames)
        return [matcher.push(d) for s in range(0, len(frames), ENCODE_BATCH)
                for d in self.encode(frames[s : s + ENCODE_BATCH])]

    def heatmap(self, image: Any):
        """(h, w) float32 in [0, 1]: where the model looks in `image` (attention maps where the aggregator has them,
        else the local-feature norm), on the model's input grid; computed with the torch model."""
        from .heatmap import heatmap

        with self._model_lock:  # threads asking at once (a server's requests) load the model once
            if self._model is None:
                self._model = engine.load_model(self.folder, self.model_name, self.manifest["source"])
            model = self._model
        return heatmap(model, image)

    def __repr__(self) -> str:
        return f"Map({str(self.folder)!r}, model={self.model_name}, runtime={self.manifest['runtime']}, " \
               f"images={self.count}, version={self.version})"


def _open_store(folder: Path, manifest: Dict[str, Any]) -> MapStore:
    """The store at the manifest's version, complete and of the manifest's size."""
    want = manifest["store"]
    try:
        store = MapStore(folder / STORE_DIR, version=want["version"])
    except _STORE_ERRORS as err:
        raise MapError(f"the map store {folder / STORE_DIR} at version {want['version']} (as {folder / MANIFEST} "
                       f"names it) cannot be read: {err}; {REBUILD}") from None
    if not store.complete or store.count != want["count"] or store.dim != want["dim"]:
        raise MapError(f"the map store {folder / STORE_DIR} at version {want['version']} holds {store.count} "
                       f"{store.dim}-d rows, not the {want['count']} {want['dim']}-d ones {folder / MANIFEST} "
                       f"records; {REBUILD}")
    return store


def _open_index(folder: Path, manifest: Dict[str, Any], count: int) -> PlaceIndex:
    path = folder / manifest["index"]["folder"]
    if ".." in Path(manifest["index"]["folder"]).parts or not path.is_dir():
        raise MapError(f"the map's index {path} is missing; {REBUILD}")
    try:
        index = PlaceIndex.load(path)
    except (IndexFileError, OSError, ValueError) as err:
        raise MapError(f"the map's index {path} cannot be read: {err}; {REBUILD}") from None
    if index.ntotal != count:
        raise MapError(f"the map's index {path} holds {index.ntotal} rows, its store {count}; {REBUILD}")
    return index
