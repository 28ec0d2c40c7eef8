"""PlaceIndex, the searchable map: descriptors with their place ids in a faiss index, and `query(image, k)`.

Descriptors are L2-normalised. The exact indexes (flat, pca) rank by inner product; the quantised and graph indexes
(ivfpq, hnsw) search the same unit vectors with L2, which ranks exactly as inner product does (|a - b|^2 =
2 - 2 a.b) and is the metric faiss's product quantiser (residuals to the IVF centroids) and HNSW are built for.
IVF-PQ may rotate before quantising (`opq=True`), and any approximate index may re-rank a shortlist of
`k * refine` candidates with exact similarities (`refine=R`): from a float16 copy of the vectors on disk beside the
saved index (`refine_from="disk"`, a few hundred random row reads per query) or from an in-memory float16 / 8-bit
copy (`"fp16"`, `"sq8"`: faiss's IndexRefine). Similarities are reported as cosine similarities (or the squared L2
distance of the unit vectors, 2 - 2 cos), whatever the metric inside. A PCA-reduced index projects with a PCA
fitted on the database and re-normalises; a model with a fitted whitening can instead keep its whitening's leading
components: `registry.create(name, pretrained=..., descriptor_dim=k)`.

The spec and its `auto` policy live in index_spec, faiss construction in faiss_build, the disk-refine vectors in
vectors_file and the saved folder's files in index_files; their public names are importable from here too.
"""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .faiss_build import _set_search_params, build_index, faiss, index_bytes, keep_projection_only, normalise
from .index_files import FORMAT, IndexFileError, read_folder, write_folder
from .index_spec import (
    AUTO,
    AUTO_FLAT_MIN,
    AUTO_FLAT_WORK,
    AUTO_LARGE_MAP,
    AUTO_NLIST_CAP,
    AUTO_NLIST_LARGE,
    AUTO_NPROBE,
    AUTO_PQ_M,
    AUTO_REFINE,
    DEFAULT_PCA_DIM,
    INDEX_KINDS,
    REFINE_FROM,
    IndexSpec,
    choose_index,
    parse_bytes,
)
from .vectors_file import VECTORS, _VectorFile

__all__ = [
    "AUTO", "AUTO_FLAT_MIN", "AUTO_FLAT_WORK", "AUTO_LARGE_MAP", "AUTO_NLIST_CAP", "AUTO_NLIST_LARGE", "AUTO_NPROBE",
    "AUTO_PQ_M", "AUTO_REFINE", "DEFAULT_PCA_DIM", "FORMAT", "INDEX_KINDS", "REFINE_FROM", "VECTORS",
    "IndexFileError", "IndexSpec", "PlaceIndex", "build_index", "choose_index", "index_bytes", "keep_projection_only",
    "normalise", "parse_bytes",
]

PathLike = Union[str, os.PathLike]
_ADD_CHUNK = 16384
MAX_TRAIN = 100_000  # training sample of IVF-PQ / PCA / SQ8


MAX_SEARCH_K = 1 << 20  # results per query: (Nq, k) arrays are allocated before anything is searched


class PlaceIndex:
    """A searchable map: descriptors with their place ids in a faiss index; `query(image, k)` for a robot's frame.

    >>> index = PlaceIndex(model.descriptor_dim, IndexSpec("hnsw"), model=model)
    >>> index.add(database_descriptors, places=place_ids)
    >>> index.query("frame.jpg", k=5)   # [(place id, distance), ...] nearest first
    Distances are squared L2 distances of the unit descriptors (2 - 2 cosine similarity); `search(...,
    similarity=True)` gives the cosine similarities instead.
    """

    def __init__(self, dim: int, spec: IndexSpec = IndexSpec(), model: Optional[Any] = None) -> None:
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
            raise ValueError(f"PlaceIndex dim must be an integer >= 1, got {dim!r}")
        self.dim = int(dim)
        self.spec = spec
        self.model = model
        self.places: List[Any] = []
        self.store: Optional[Dict[str, Any]] = None  # the map store the rows came from (registry.evaluation.store)
        self._index = None
        self._vectors: Optional[_VectorFile] = None

    @property
    def ntotal(self) -> int:
        return 0 if self._index is None else int(self._index.ntotal)

    @property
    def faiss_index(self):
        return self._index

    def memory_bytes(self) -> int:
        """Bytes the index holds in RAM (what faiss serialises); 0 before anything is added."""
        return 0 if self._index is None else index_bytes(self._index)

    def disk_bytes(self) -> int:
        """Bytes of the float16 copy a disk refine reads from (0 for other indexes)."""
        return 0 if self._vectors is None else self._vectors.count * self.dim * 2

    def train(self, descriptors: np.ndarray, max_train: int = MAX_TRAIN, seed: int = 0) -> None:
        """Train IVF-PQ / PCA on (a sample of) these descriptors; flat and HNSW need no training."""
        n = len(descriptors)
        self.spec = self.spec.resolved(n, self.dim)
        sample = None
        if self.spec.needs_training:  # flat and HNSW read nothing here (a store stays on disk)
            pick = np.sort(np.random.default_rng(seed).choice(n, min(n, max_train), replace=False))
            whole = len(pick) == n and type(descriptors) is np.ndarray  # every row, in order: no copy
            sample = descriptors if whole else np.asarray(descriptors[pick])
            _check_finite(sample, "training descriptors")
        self._index = build_index(self.spec, self.dim, sample, n_hint=n)
        if self.spec.refine and self.spec.refine_from == "disk":
            self._vectors = _VectorFile.scratch(self.dim)

    def set_search_params(self, nprobe: Optional[int] = None, ef_search: Optional[int] = None,
                          refine: Optional[int] = None) -> "PlaceIndex":
        """Retune a built index at query time, no rebuild: IVF-PQ's `nprobe` lists searched, HNSW's `ef_search`
        beam width (higher: slower, closer to exact search), the `refine` shortlist factor of a refined index. Kept
        in `spec`, so `save` / `load` keep it too."""
        changes = {k: v for k, v in (("nprobe", nprobe), ("ef_search", ef_search), ("refine", refine))
                   if v is not None}
        wrong = {"nprobe": "ivfpq", "ef_search": "hnsw"}
        misplaced = [k for k in changes if k in wrong and wrong[k] != self.spec.kind]
        if misplaced:
            raise ValueError(f"{', '.join(misplaced)} does not apply to a {self.spec.kind!r} index "
                             "(nprobe: ivfpq, ef_search: hnsw)")
        if "refine" in changes and not self.spec.refine:
            raise ValueError("refine can be retuned only on an index built with refine (IndexSpec(..., refine=R))")
        self.spec = replace(self.spec, **changes)  # IndexSpec checks the ranges
        if self._index is not None:
            _set_search_params(self._index, self.spec)
        return self

    def add(self, descriptors: Any, places: Optional[Sequence[Any]] = None) -> None:
        """Append descriptors (an array, a memmap or a map store) and their place ids (default: the store's places,
        else row ids). NaN or Inf rows are refused before anything is added. A store or memmap is read once when
        its rows fit one chunk or are all sampled to train the index anyway, else in chunks: a finiteness pass,
        then the adding pass."""
        store = None
        if hasattr(descriptors, "reference") and hasattr(descriptors, "descriptors"):  # a MapStore
            store, descriptors = descriptors, descriptors.descriptors
            places = store.places if places is None else places
        if descriptors.ndim != 2 or descriptors.shape[1] != self.dim:
            raise ValueError(f"PlaceIndex of dim {self.dim} got descriptors of shape {tuple(descriptors.shape)}")
        if places is not None and len(places) != len(descriptors):
            raise ValueError(f"{len(places)} place ids for {len(descriptors)} descriptors")
        descriptors = self._read_once(descriptors)
        for s in range(0, len(descriptors), _ADD_CHUNK):
            _check_finite(np.asarray(descriptors[s : s + _ADD_CHUNK]), "descriptors", offset=s)
        if store is not None:
            if self.ntotal:
                raise ValueError("a PlaceIndex refers to one map store: add the store to an empty index")
            reference = store.reference()
            _check_model_made(self.model, reference, f"map store {store.folder}")
            self.store = reference
        if self._index is None:
            self.train(descriptors)
        if self._vectors is not None:
            self._vectors = self._vectors.writable()
        start = self.ntotal
        for s in range(0, len(descriptors), _ADD_CHUNK):
            rows = normalise(descriptors[s : s + _ADD_CHUNK])
            self._index.add(rows)
            if self._vectors is not None:
                self._vectors.append(rows)
        self.places.extend(range(start, start + len(descriptors)) if places is None else map(_place_id, places))

    def _read_once(self, descriptors: Any) -> Any:
        """An on-disk source (a store's rows, a memmap) as one in-memory array when holding it costs no more than
        the add holds anyway (one chunk, or a training sample that is every row); else the source itself."""
        if type(descriptors) is np.ndarray:
            return descriptors
        n = len(descriptors)
        if n <= _ADD_CHUNK or (self._index is None and self.spec.needs_training and n <= MAX_TRAIN):
            return np.asarray(descriptors)
        return descriptors

    def search(self, descriptors: np.ndarray, k: int, similarity: bool = False) -> Tuple[np.ndarray, np.ndarray]:
        """(distances, row ids), each (Nq, k), nearest first; -1 ids (distance inf) pad when the map holds fewer
        than k. `similarity=True`: cosine similarities (-inf padding) instead of distances."""
        if self._index is None or self.ntotal == 0:
            raise ValueError("the PlaceIndex is empty: add() database descriptors first")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= MAX_SEARCH_K:
            raise ValueError(f"k must be an integer in 1..{MAX_SEARCH_K} (the results are padded to k columns), got "
                             f"{k!r}")
        q = np.atleast_2d(np.asarray(descriptors))
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"queries must be {self.dim}-d (this index's dim), got shape {tuple(q.shape)}")
        _check_finite(q, "query descriptors")
        q = normalise(q)
        found = min(int(k), self.ntotal)
        if self._vectors is not None:
            sims, ids = self._refine_from_disk(q, found)
        else:
            raw, ids = self._index.search(q, found)
            sims = 1.0 - raw / 2.0 if self._index.metric_type == faiss.METRIC_L2 else raw
        sims = np.where(ids >= 0, sims, -np.inf).astype(np.float32)
        if found < k:
            sims = np.pad(sims, ((0, 0), (0, k - found)), constant_values=-np.inf)
            ids = np.pad(ids, ((0, 0), (0, k - found)), constant_values=-1)
        ids = ids.astype(np.int64)
        if similarity:
            return sims, ids
        return np.where(ids >= 0, np.maximum(2.0 - 2.0 * sims, 0.0), np.inf).astype(np.float32), ids

    def _refine_from_disk(self, q: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
        """The index's k * refine shortlist re-scored with the float16 vectors read from disk; top k kept."""
        short = min(k * int(self.spec.refine), self.ntotal)
        _, cand = self._index.search(q, short)
        sims = np.full((len(q), k), -np.inf, dtype=np.float32)
        ids = np.full((len(q), k), -1, dtype=np.int64)
        for i, row in enumerate(cand):
            row = np.sort(row[row >= 0])  # sorted: sequential reads where candidates are close on disk
            if not len(row):
                continue
            exact = self._vectors.rows(row) @ q[i]
            top = np.argsort(-exact, kind="stable")[:k]
            sims[i, : len(top)], ids[i, : len(top)] = exact[top], row[top]
        return sims, ids

    def query(self, image: Any, k: int = 5) -> List[Tuple[Any, float]]:
        """Top-k (place, distance) of one image (a path, PIL image or preprocessed (3, H, W) tensor), nearest first.
        The image is encoded as extraction encodes the map (the model's encode step and its non-finite check)."""
        if self.model is None:
            raise ValueError("query(image) needs the model: PlaceIndex(..., model=model) or load(folder, model=model)")
        desc = self._describe(image)
        if desc.shape[1] != self.dim:
            raise ValueError(f"the model gives {desc.shape[1]}-d descriptors, this index holds {self.dim}-d ones: "
                             "query with the model (and descriptor_dim) the map was built with")
        dists, ids = self.search(desc, k)
        return [(self.places[i], float(d)) for i, d in zip(ids[0], dists[0]) if i >= 0]

    def _describe(self, image: Any) -> np.ndarray:
        import torch
        from PIL import Image

        from ..datasets.images import open_rgb
        from .extract import Preprocess, encoder

        if isinstance(image, (str, os.PathLike)):
            image = open_rgb(image)
        if isinstance(image, Image.Image):
            image = Preprocess(self.model.input_config)(image)  # 16-bit images scaled, not clipped
        encode, was_training = encoder(self.model)
        try:
            with torch.inference_mode():
                return encode(image.unsqueeze(0)).cpu().numpy()
        finally:
            if was_training is not None:
                self.model.train(was_training)

    # ------------------------------------------------------------------------------------------------ save / load
    def save(self, folder: PathLike) -> Path:
        """Write index.faiss, places.json (format, spec, dim, place ids, the store it came from) and, for a disk
        refine, vectors.f16 to `folder`, as a whole: staged beside it, fsynced, then renamed over it, so a failed
        save leaves the earlier index there intact. Files get the user's umask. Place ids are kept as JSON values:
        ints stay ints, strings stay strings."""
        if self._index is None:
            raise ValueError("nothing to save: the PlaceIndex is empty")
        folder = Path(folder)
        meta: Dict[str, Any] = {"dim": self.dim, "spec": self.spec, "ntotal": self.ntotal, "store": self.store,
                                "places": list(self.places)}
        vectors = None
        if self._vectors is not None:
            meta["vectors"] = {"file": VECTORS, "dtype": "float16", "count": self._vectors.count,
                               "sha256": self._vectors.sha256}
            vectors = (VECTORS, self._vectors.path)
        write_folder(folder, self._index, meta, vectors)
        if self._vectors is not None and self._vectors._owned is None:
            self._vectors = _VectorFile(folder / VECTORS, self.dim, self._vectors.count)
        return folder

    @classmethod
    def load(cls, folder: PathLike, model: Optional[Any] = None, verify: bool = True,
             store: Optional[PathLike] = None) -> "PlaceIndex":
        """A PlaceIndex written by `save` (pass `model` to query images), checked before and after faiss reads it:
        declared sizes against the file's length (before anything is allocated), the spec against the index in
        the file, the place ids against its size and a disk refine's vectors against their sha256 (`verify`);
        IndexFileError says which. An index built from a map store checks that store is where and as it was
        (`store`: its folder now, if it moved); StoreChangedError names what moved or changed."""
        folder = Path(folder)
        meta, index = read_folder(folder, verify)
        spec = meta["spec"]
        out = cls(meta["dim"], spec, model=model)
        out._index = index
        _set_search_params(out._index, spec)
        out.places = meta["places"]
        out.store = meta.get("store")
        if spec.refine and spec.refine_from == "disk":
            vec = meta.get("vectors")
            if not isinstance(vec, dict) or vec.get("count") != out.ntotal:
                raise IndexFileError(f"{folder / 'places.json'} declares a disk refine but no vectors for its "
                                     f"{out.ntotal} rows")
            out._vectors = _VectorFile.opened(folder / VECTORS, out.dim, out.ntotal, str(vec.get("sha256")), verify)
        if out.store is not None or store is not None:
            from .store import check_reference

            if out.store is None:
                raise IndexFileError(f"{folder / 'places.json'} records no map store: store= applies to indexes "
                                     "built from one")
            out.store = check_reference(out.store, store, folder)
            _check_model_made(model, out.store, f"the index in {folder} (map store {out.store.get('path')})")
        return out


def _check_model_made(model: Optional[Any], ref: Dict[str, Any], what: str) -> None:
    """Refuse (StoreMismatchError) a model other than the one whose descriptors `ref` (a map store's reference)
    records: its config hash (config, input config, weights, and the resize the store was extracted with)."""
    if model is None or not isinstance(ref, dict) or not isinstance(ref.get("config_hash"), str):
        return
    from .store import StoreMismatchError
    from .store_extract import model_config_hash

    got = model_config_hash(model, ref.get("resize"), ref.get("longer_side"))
    if got != ref["config_hash"]:
        name = getattr(model, "name", type(model).__name__)
        raise StoreMismatchError(
            f"{what} holds descriptors of a model with config hash {ref['config_hash'][:12]}"
            f"{' (' + str(ref['model']) + ')' if ref.get('model') else ''}, not of the model given, {name} (config "
            f"hash {got[:12]}): its queries would be compared with another model's descriptors; pass the model the "
            "store was extracted with, or extract a store with this one")


def _check_finite(x: np.ndarray, what: str, offset: int = 0) -> None:
    bad = ~np.isfinite(x).all(axis=1) if x.ndim == 2 else ~np.isfinite(x)
    if bad.any():
        rows = (np.flatnonzero(bad)[:5] + offset).tolist()
        raise ValueError(f"{what} hold NaN or Inf (rows {rows}{', ...' if bad.sum() > 5 else ''}); nothing was "
                         "added or searched: check the model's output (weights, whitening) for non-finite values")


def _place_id(place: Any) -> Any:
    """A place id as a plain JSON value: numpy integers become ints, numpy strings strs; others are kept."""
    if isinstance(place, np.integer):
        return int(place)
    if isinstance(place, np.str_):
        return str(place)
    return place
