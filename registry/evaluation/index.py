"""faiss indexes for large maps (exact flat, IVF-PQ, HNSW, PCA-reduced) and PlaceIndex, the one-image query API.

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
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import warnings
import weakref
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .._atomic import folder_mode

try:
    import faiss
except ImportError:  # exact search falls back to torch in recall.search; the other kinds need faiss
    faiss = None

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
INDEX_KINDS = ("flat", "ivfpq", "hnsw", "pca")
AUTO = "auto"  # IndexSpec("auto"): chosen from the map size, the dimension and a memory budget (choose_index)
REFINE_FROM = ("disk", "fp16", "sq8")
DEFAULT_PCA_DIM = 256
FORMAT = 2  # places.json format: 2 adds the metric change (L2 for ivfpq / hnsw), refine and the disk vectors
VECTORS = "vectors.f16"  # the float16 copy a disk-refined index re-ranks from
_ADD_CHUNK = 16384
_TRAIN_PER_CENTROID = 40  # faiss's rule of thumb; fewer only warns
_OPQ_ITER, _OPQ_TRAIN = 8, 8192  # OPQ rotation: alternating rounds and training points


@dataclass(frozen=True)
class IndexSpec:
    """Which faiss index and the parameters that matter.

    kind: 'flat' (exact), 'ivfpq' (nlist lists, m sub-quantisers of nbits bits, nprobe lists searched, `opq`: an
    OPQ rotation learnt first), 'hnsw' (hnsw_m links per node, ef_construction / ef_search beam widths), 'pca'
    (exact search on pca_dim-d PCA projections) or 'auto' (one of these, picked by `choose_index` from the map size,
    the dimension and `memory_budget` bytes). pca_dim also prefixes an 'ivfpq' or 'hnsw' index with the projection.
    refine: re-rank a shortlist of k * refine candidates with exact similarities, from `refine_from` 'disk' (a
    float16 copy beside the saved index), 'fp16' or 'sq8' (an in-memory copy). Out-of-range values raise ValueError.
    """

    kind: str = "flat"
    pca_dim: Optional[int] = None
    nlist: Optional[int] = None
    m: Optional[int] = None
    nbits: int = 8
    nprobe: int = 16
    hnsw_m: int = 32
    ef_construction: int = 40
    ef_search: int = 64
    opq: bool = False
    refine: Optional[int] = None
    refine_from: str = "disk"
    memory_budget: Optional[int] = None

    def __post_init__(self) -> None:
        if self.kind not in INDEX_KINDS + (AUTO,):
            raise ValueError(f"index must be one of {', '.join(INDEX_KINDS + (AUTO,))}, got {self.kind!r}")
        bounds = {"nbits": (1, 16), "nprobe": (1, None), "hnsw_m": (2, None), "ef_construction": (1, None),
                  "ef_search": (1, None), "pca_dim": (1, None), "nlist": (1, None), "m": (1, None),
                  "refine": (1, None), "memory_budget": (1, None)}
        for name, (low, high) in bounds.items():
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ValueError(f"IndexSpec {name} must be an integer, got {value!r}")
            if value < low or (high is not None and value > high):
                allowed = f">= {low}" if high is None else f"in {low}..{high}"
                raise ValueError(f"IndexSpec {name} must be {allowed}, got {value}")
        if self.refine_from not in REFINE_FROM:
            raise ValueError(f"refine_from must be one of {', '.join(REFINE_FROM)}, got {self.refine_from!r}")
        if self.refine is not None and self.kind == "flat":
            raise ValueError("refine re-ranks an approximate index's shortlist: a 'flat' index is exact already")
        if self.opq and self.kind not in ("ivfpq", AUTO):
            raise ValueError(f"opq rotates before product quantisation: it applies to 'ivfpq', not {self.kind!r}")
        if self.kind == "pca" and self.pca_dim is None:
            object.__setattr__(self, "pca_dim", DEFAULT_PCA_DIM)

    @property
    def metric(self) -> int:
        """faiss metric: L2 on the unit vectors for quantised and graph indexes, inner product for exact ones."""
        return faiss.METRIC_L2 if self.kind in ("ivfpq", "hnsw") else faiss.METRIC_INNER_PRODUCT

    def search_dim(self, dim: int) -> int:
        """Dimension the index searches in (after any PCA)."""
        return min(self.pca_dim, dim) if self.pca_dim else dim

    def resolved(self, n: int, dim: int) -> "IndexSpec":
        """This spec with 'auto' chosen and nlist and m filled in for `n` database vectors of `dim` dims."""
        if self.kind == AUTO:
            return choose_index(n, dim, self.memory_budget)
        if self.kind != "ivfpq":
            return self
        d = self.search_dim(dim)
        nlist = self.nlist or max(1, min(int(4 * np.sqrt(n)), n // 39))
        m = self.m or max(v for v in range(1, max(1, min(64, d // 4)) + 1) if d % v == 0)
        return replace(self, nlist=nlist, m=m)

    def factory(self, dim: int) -> str:
        """The faiss index_factory string (nlist and m resolved; an in-memory refine wraps it in IndexRefine)."""
        prefix = f"PCA{self.search_dim(dim)},L2norm," if self.pca_dim and self.pca_dim < dim else ""
        if self.kind in ("flat", "pca"):
            return prefix + "Flat"
        if self.kind == "hnsw":
            return prefix + f"HNSW{self.hnsw_m},Flat"
        return prefix + (f"OPQ{self.m}," if self.opq else "") + f"IVF{self.nlist},PQ{self.m}x{self.nbits}"

    @property
    def needs_training(self) -> bool:
        """Whether building this index needs database vectors to train on (IVF-PQ's lists and codes, a PCA, SQ8)."""
        return self.kind in ("ivfpq", AUTO) or bool(self.pca_dim) or (bool(self.refine) and self.refine_from == "sq8")

    def min_train(self) -> int:
        """Fewest training vectors this index accepts."""
        need = 1
        if self.kind == "ivfpq":
            need = max(self.nlist or 1, 2**self.nbits)
        if self.pca_dim:
            need = max(need, 2)
        return need


# from benchmarks/RESULTS.md section 10 (one thread): a flat scan of 10^4 x 256 takes ~0.2 ms and of 10^5 x 256 5-12 ms;
# IVF-PQ with 32 codes per 256 dims, nprobe 128 and a 16x shortlist re-ranked from disk keeps R@1 within 0.5 of exact
# at 10^5 (nprobe 64 and 256 both within 0.2), at 10^6 with 1024 lists (exact R@1 in 6.3 ms) and at 10^7 with 4096
# lists (-0.4 in 7.7 ms; 1024 lists kept exact R@1 but took 36 ms), in 40-53 B of RAM per image; 8192-d through a
# 256-d PCA keeps the projection only (137 B per image at 10^5, R@1 within 0.2 of exact at nprobe 128)
AUTO_FLAT_WORK = 1e7  # largest n * dim searched exactly
AUTO_FLAT_MIN = 1000  # below this, exact (IVF-PQ needs 256 training vectors per codebook)
AUTO_NLIST_CAP = 1024  # as measured up to 10^6 images
AUTO_NLIST_LARGE, AUTO_LARGE_MAP = 4096, 2 * 10**6  # beyond ~10^6 images: the lists measured at 10^7
AUTO_PQ_M, AUTO_NPROBE, AUTO_REFINE = 32, 128, 16


def choose_index(n: int, dim: int, memory_budget: Optional[int] = None) -> IndexSpec:
    """The index benchmarks/RESULTS.md section 10 says keeps recall for `n` vectors of `dim` dims in `memory_budget`
    bytes of RAM (None: no limit): exact search while a scan stays within a few ms (n * dim <= AUTO_FLAT_WORK) and
    the vectors fit; beyond, IVF-PQ (PCA to 256 dims first above 1024 dims; 1024 lists, 4096 beyond 2 * 10^6
    images) whose k * 16 shortlist is re-ranked from float16 vectors on disk: RAM holds the codes and ids, m + 8
    bytes per image."""
    budget = float("inf") if memory_budget is None else memory_budget
    if (n * dim <= AUTO_FLAT_WORK or n < AUTO_FLAT_MIN) and 4 * n * dim <= budget:
        return IndexSpec("flat")
    d = DEFAULT_PCA_DIM if dim > 1024 else dim
    m = max(v for v in range(1, min(AUTO_PQ_M, max(1, d // 4)) + 1) if d % v == 0)
    nlist = max(1, min(int(4 * np.sqrt(n)), n // 39, AUTO_NLIST_LARGE if n > AUTO_LARGE_MAP else AUTO_NLIST_CAP))
    spec = IndexSpec("ivfpq", pca_dim=d if d < dim else None, nlist=nlist, m=m, nbits=8, nprobe=AUTO_NPROBE,
                     refine=AUTO_REFINE, refine_from="disk")
    codes = n * (m + 8) + 4 * d * (nlist + 256) + (4 * d * dim if d < dim else 0)
    if codes > budget:
        raise ValueError(f"no index keeps {n:,} {dim}-d descriptors in a memory budget of {budget:,.0f} bytes: the "
                         f"smallest (IVF-PQ codes and ids) needs about {codes:,.0f}; raise the budget")
    return spec


def parse_bytes(text: Union[str, int]) -> int:
    """'8GB', '512MiB', '1e9' or 1000000 -> bytes (decimal GB/MB/KB, binary GiB/MiB/KiB)."""
    if isinstance(text, (int, np.integer)) and not isinstance(text, bool):
        value = int(text)
    else:
        units = {"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "kb": 10**3, "mb": 10**6, "gb": 10**9,
                 "tb": 10**12, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
        raw = str(text).strip().lower().replace(" ", "")
        unit = next((u for u in units if raw.endswith(u)), "")
        try:
            value = int(float(raw[: len(raw) - len(unit)]) * units.get(unit, 1))
        except ValueError:
            raise ValueError(f"memory size {text!r} is not a size: write e.g. 8GB, 512MiB or 1e9") from None
    if value < 1:
        raise ValueError(f"memory size must be positive, got {text!r}")
    return value


def _need_faiss(kind: str) -> None:
    if faiss is None:
        raise ImportError(f"index={kind!r} needs faiss: pip install faiss-cpu (or faiss-gpu)")


def normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, as contiguous float32."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def build_index(spec: IndexSpec, dim: int, train: Optional[np.ndarray] = None, n_hint: Optional[int] = None):
    """An empty faiss index for `spec` (IVF-PQ and PCA trained on `train`, L2-normalised rows); nothing added.

    An in-memory refine ('fp16', 'sq8') is a faiss IndexRefine around the index; a disk refine is PlaceIndex's."""
    _need_faiss(spec.kind)
    n = n_hint or (len(train) if train is not None else 0)
    spec = spec.resolved(max(n, 1), dim)
    if spec.kind == "ivfpq" and spec.search_dim(dim) % spec.m:
        raise ValueError(f"IVF-PQ needs m dividing the descriptor dim {spec.search_dim(dim)}, got m={spec.m}")
    index = faiss.index_factory(dim, spec.factory(dim), spec.metric)
    if spec.kind == "ivfpq":  # polysemous codes serve only Hamming-filtered search (unused): skip their training
        faiss.downcast_index(faiss.extract_index_ivf(index)).do_polysemous_training = False
    if spec.opq:  # faiss's defaults (50 rounds, 65536 points) take minutes on one core; these take seconds
        for i in range(index.chain.size()):
            opq = faiss.downcast_VectorTransform(index.chain.at(i))
            if isinstance(opq, faiss.OPQMatrix):
                opq.niter, opq.niter_pq_0, opq.max_train_points = _OPQ_ITER, _OPQ_ITER, _OPQ_TRAIN
    if spec.refine and spec.refine_from != "disk":
        qtype = {"fp16": faiss.ScalarQuantizer.QT_fp16, "sq8": faiss.ScalarQuantizer.QT_8bit}[spec.refine_from]
        index = faiss.IndexRefine(index, faiss.IndexScalarQuantizer(dim, qtype, spec.metric))
    if not index.is_trained:
        if train is None or len(train) < spec.min_train():
            got = 0 if train is None else len(train)
            raise ValueError(f"{spec.kind} index with nlist={spec.nlist}, nbits={spec.nbits}, pca_dim={spec.pca_dim} "
                             f"needs >= {spec.min_train()} database vectors to train, got {got}: use index='flat' "
                             "or a smaller nbits / nlist")
        index.train(normalise(train))
        keep_projection_only(index)
    _set_search_params(index, spec)
    return index


def keep_projection_only(index) -> int:
    """Replace each trained PCAMatrix in the index's transform chain by a faiss LinearTransform holding only the
    projection it applies (A: d_out x d_in, b): a PCAMatrix also keeps and saves the full d_in x d_in eigenvector
    matrix it was trained with (268 MB at 8192-d, for an 8 MB projection). Same outputs; returns how many were
    replaced. The chain owns the new transform (index_factory's indexes own their fields)."""
    outer = faiss.downcast_index(index)
    base = faiss.downcast_index(outer.base_index) if isinstance(outer, faiss.IndexRefine) else outer
    if not isinstance(base, faiss.IndexPreTransform) or not base.own_fields:
        return 0
    chain = [faiss.downcast_VectorTransform(base.chain.at(i)) for i in range(base.chain.size())]
    slim = []
    for vt in chain:
        if isinstance(vt, faiss.PCAMatrix) and vt.is_trained:
            lt = faiss.LinearTransform(vt.d_in, vt.d_out, True)
            faiss.copy_array_to_vector(faiss.vector_to_array(vt.A), lt.A)
            faiss.copy_array_to_vector(faiss.vector_to_array(vt.b), lt.b)
            lt.is_orthonormal, lt.is_trained = vt.is_orthonormal, True
            vt = lt
        slim.append(vt)
    replaced = [old for old, new in zip(chain, slim) if old is not new]
    if not replaced:
        return 0
    base.chain.clear()
    for vt in slim:
        base.chain.push_back(vt)
        vt.thisown = False  # owned by the chain from now on
    for old in replaced:
        old.thisown = True  # out of the chain: freed with its Python proxy
    return len(replaced)


def _innermost(index):
    """The index under any PCA transform and refine wrapper."""
    index = faiss.downcast_index(index)
    while True:
        if isinstance(index, faiss.IndexPreTransform):
            index = faiss.downcast_index(index.index)
        elif isinstance(index, faiss.IndexRefine):
            index = faiss.downcast_index(index.base_index)
        else:
            return index


def _set_search_params(index, spec: IndexSpec) -> None:
    outer = faiss.downcast_index(index)
    if isinstance(outer, faiss.IndexRefine):
        outer.k_factor = float(spec.refine or 1)
    inner = _innermost(index)
    if spec.kind == "ivfpq":
        faiss.extract_index_ivf(inner).nprobe = min(spec.nprobe, spec.nlist or spec.nprobe)
    elif spec.kind == "hnsw":
        inner.hnsw.efSearch = spec.ef_search
        inner.hnsw.efConstruction = spec.ef_construction


def index_bytes(index) -> int:
    """Bytes faiss writes for this index (its memory, within a few kB of headers)."""
    writer = faiss.VectorIOWriter()
    faiss.write_index(index, writer)
    return int(writer.data.size())


class IndexFileError(ValueError):
    """A saved PlaceIndex folder that cannot be trusted: malformed, inconsistent, or another index than it says."""


class _VectorFile:
    """Unit vectors as float16 rows in one raw file, appended as the index grows; the copy a disk refine re-ranks
    from (one random row read per candidate). Its sha256 is kept while writing and checked when loaded."""

    def __init__(self, path: Path, dim: int, count: int = 0, owned_dir: Optional[Path] = None) -> None:
        self.path, self.dim, self.count = Path(path), int(dim), int(count)
        self._sha = hashlib.sha256()
        self._map: Optional[np.memmap] = None
        self._owned = owned_dir
        if owned_dir is not None:  # a scratch copy: removed with this object
            weakref.finalize(self, shutil.rmtree, str(owned_dir), True)

    @classmethod
    def scratch(cls, dim: int) -> "_VectorFile":
        folder = Path(tempfile.mkdtemp(prefix="placeindex-vectors-"))
        (folder / VECTORS).touch()
        return cls(folder / VECTORS, dim, owned_dir=folder)

    @classmethod
    def opened(cls, path: Path, dim: int, count: int, sha256: str, verify: bool) -> "_VectorFile":
        """The saved copy, checked: its length, and (verify) its sha256 against places.json."""
        if not path.is_file():
            raise IndexFileError(f"{path} is missing: this index re-ranks from it (refine_from='disk'); save the index "
                                 "again from its descriptors")
        want = count * dim * 2
        if path.stat().st_size != want:
            raise IndexFileError(f"{path} holds {path.stat().st_size} bytes, not the {want} of {count} x {dim} float16 "
                                 "rows places.json declares: it was truncated or replaced")
        out = cls(path, dim, count)
        if verify:
            with open(path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 24), b""):
                    out._sha.update(block)
            if out._sha.hexdigest() != sha256:
                raise IndexFileError(f"{path} does not match the sha256 in places.json: it was modified after saving")
        return out

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()

    def writable(self) -> "_VectorFile":
        """self, or a scratch copy when this is a saved file (a saved folder is never modified in place)."""
        if self._owned is not None:
            return self
        out = _VectorFile.scratch(self.dim)
        shutil.copyfile(self.path, out.path)
        out.count, out._sha = self.count, self._sha.copy()
        return out

    def append(self, unit_rows: np.ndarray) -> None:
        data = np.ascontiguousarray(unit_rows, dtype=np.float16).tobytes()
        with open(self.path, "ab") as fh:
            fh.write(data)
        self._sha.update(data)
        self.count += len(unit_rows)
        self._map = None

    def rows(self, ids: np.ndarray) -> np.ndarray:
        if self._map is None:
            self._map = np.memmap(self.path, dtype=np.float16, mode="r", shape=(self.count, self.dim))
        return np.asarray(self._map[ids], dtype=np.float32)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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

    def train(self, descriptors: np.ndarray, max_train: int = 100_000, seed: int = 0) -> None:
        """Train IVF-PQ / PCA on (a sample of) these descriptors; flat and HNSW need no training."""
        n = len(descriptors)
        self.spec = self.spec.resolved(n, self.dim)
        sample = None
        if self.spec.needs_training:  # flat and HNSW read nothing here (a store stays on disk)
            pick = np.sort(np.random.default_rng(seed).choice(n, min(n, max_train), replace=False))
            sample = np.asarray(descriptors[pick])
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
        """Append descriptors (an array, a memmap or a map store, read in chunks) and their place ids (default: the
        store's places, else row ids). NaN or Inf rows are refused before anything is added."""
        store = None
        if hasattr(descriptors, "reference") and hasattr(descriptors, "descriptors"):  # a MapStore
            store, descriptors = descriptors, descriptors.descriptors
            places = store.places if places is None else places
        if descriptors.ndim != 2 or descriptors.shape[1] != self.dim:
            raise ValueError(f"PlaceIndex of dim {self.dim} got descriptors of shape {tuple(descriptors.shape)}")
        if places is not None and len(places) != len(descriptors):
            raise ValueError(f"{len(places)} place ids for {len(descriptors)} descriptors")
        for s in range(0, len(descriptors), _ADD_CHUNK):
            _check_finite(np.asarray(descriptors[s : s + _ADD_CHUNK]), "descriptors", offset=s)
        if store is not None:
            if self.ntotal:
                raise ValueError("a PlaceIndex refers to one map store: add the store to an empty index")
            self.store = store.reference()
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
        self.places.extend(range(start, start + len(descriptors)) if places is None else places)

    def search(self, descriptors: np.ndarray, k: int, similarity: bool = False) -> Tuple[np.ndarray, np.ndarray]:
        """(distances, row ids), each (Nq, k), nearest first; -1 ids (distance inf) pad when the map holds fewer
        than k. `similarity=True`: cosine similarities (-inf padding) instead of distances."""
        if self._index is None or self.ntotal == 0:
            raise ValueError("the PlaceIndex is empty: add() database descriptors first")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be an integer >= 1, got {k!r}")
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
        """Top-k (place, distance) of one image (a path, PIL image or preprocessed (3, H, W) tensor), nearest first."""
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
        import torch.nn.functional as F
        from PIL import Image

        from ..datasets.images import open_rgb
        from .extract import Preprocess

        if isinstance(image, (str, os.PathLike)):
            image = open_rgb(image)
        if isinstance(image, Image.Image):
            image = Preprocess(self.model.input_config)(image)  # 16-bit images scaled, not clipped
        device = next(self.model.parameters()).device
        with torch.inference_mode():
            was_training = self.model.training
            self.model.eval()
            out = self.model(image.unsqueeze(0).to(device))
            self.model.train(was_training)
        return F.normalize(out.float(), dim=-1).cpu().numpy()

    # ------------------------------------------------------------------------------------------------ save / load
    def save(self, folder: PathLike) -> Path:
        """Write index.faiss, places.json (format, spec, dim, place ids, the store it came from) and, for a disk
        refine, vectors.f16 to `folder`, as a whole: written in a folder beside it, fsynced, then renamed over it,
        so a failed save leaves the earlier index there intact. Files get the user's umask."""
        if self._index is None:
            raise ValueError("nothing to save: the PlaceIndex is empty")
        folder = Path(folder)
        if folder.exists() and not (folder / "places.json").is_file() and any(folder.iterdir()):
            raise FileExistsError(f"{folder} exists and is not a PlaceIndex folder (no places.json): pick a new or "
                                  "empty folder; it is replaced as a whole")
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
        try:
            os.chmod(tmp, folder_mode())
            try:
                faiss.write_index(self._index, str(tmp / "index.faiss"))
            except RuntimeError as err:  # faiss reports a failed fwrite as a RuntimeError
                raise OSError(f"faiss could not write index.faiss: {str(err).splitlines()[0]}") from None
            meta = {"format": FORMAT, "dim": self.dim, "spec": asdict(self.spec), "ntotal": self.ntotal,
                    "store": self.store, "places": list(self.places)}
            if self._vectors is not None:
                shutil.copyfile(self._vectors.path, tmp / VECTORS)
                meta["vectors"] = {"file": VECTORS, "dtype": "float16", "count": self._vectors.count,
                                   "sha256": self._vectors.sha256}
            (tmp / "places.json").write_text(json.dumps(meta))
            for path in tmp.iterdir():
                _fsync(path)
            _fsync(tmp)
            _replace_folder(tmp, folder)
        except OSError as err:
            shutil.rmtree(tmp, ignore_errors=True)
            raise OSError(err.errno, f"could not save the PlaceIndex to {folder} ({err}); the earlier index there, if "
                                     "any, is unchanged") from err
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
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
        meta_path, index_path = folder / "places.json", folder / "index.faiss"
        for path in (meta_path, index_path):
            if not path.is_file():
                raise FileNotFoundError(f"{folder} is not a saved PlaceIndex: {path.name} is missing")
        meta = _read_meta(meta_path)
        spec, dim = meta["spec"], meta["dim"]
        out = cls(dim, spec, model=model)
        index = _read_index_bounded(index_path)
        _check_index(index, spec, dim, len(meta["places"]), index_path, meta.get("format", 1))
        keep_projection_only(index)  # an index saved before PCAMatrix was slimmed loads slim
        out._index = index
        _set_search_params(out._index, spec)
        out.places = meta["places"]
        out.store = meta.get("store")
        if spec.refine and spec.refine_from == "disk":
            vec = meta.get("vectors")
            if not isinstance(vec, dict) or vec.get("count") != out.ntotal:
                raise IndexFileError(f"{meta_path} declares a disk refine but no vectors for its {out.ntotal} rows")
            out._vectors = _VectorFile.opened(folder / VECTORS, dim, out.ntotal, str(vec.get("sha256")), verify)
        if out.store is not None or store is not None:
            from .store import check_reference

            if out.store is None:
                raise IndexFileError(f"{meta_path} records no map store: store= applies to indexes built from one")
            out.store = check_reference(out.store, store, folder)
        return out


def _check_finite(x: np.ndarray, what: str, offset: int = 0) -> None:
    bad = ~np.isfinite(x).all(axis=1) if x.ndim == 2 else ~np.isfinite(x)
    if bad.any():
        rows = (np.flatnonzero(bad)[:5] + offset).tolist()
        raise ValueError(f"{what} hold NaN or Inf (rows {rows}{', ...' if bad.sum() > 5 else ''}); nothing was "
                         "added or searched: check the model's output (weights, whitening) for non-finite values")


def _replace_folder(tmp: Path, folder: Path) -> None:
    """Rename `tmp` to `folder`; an existing folder is moved aside first and removed only once the new one is in."""
    if folder.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".old", dir=folder.parent))
        os.rename(folder, old / "index")
        try:
            os.rename(tmp, folder)
        except BaseException:
            os.rename(old / "index", folder)
            raise
        finally:
            if folder.exists():
                shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, folder)
    _fsync(folder.parent)


def _read_meta(path: Path) -> Dict[str, Any]:
    """places.json parsed and checked: its fields, their types and the spec's ranges."""
    try:
        meta = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise IndexFileError(f"{path} is not valid JSON ({err})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("spec"), dict) or not isinstance(meta.get("places"), list):
        raise IndexFileError(f"{path} is not a PlaceIndex description: it needs 'dim', 'spec' and 'places'")
    fmt = meta.get("format", 1)
    if not isinstance(fmt, int) or not 1 <= fmt <= FORMAT:
        raise IndexFileError(f"{path} has format {fmt!r}; this version reads formats 1..{FORMAT}: upgrade the package")
    dim = meta.get("dim")
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise IndexFileError(f"{path}: dim must be an integer >= 1, got {dim!r}")
    known = {f.name for f in fields(IndexSpec)}
    unknown = sorted(set(meta["spec"]) - known)
    if unknown:
        raise IndexFileError(f"{path}: unknown spec fields {unknown}; valid: {sorted(known)}")
    try:
        meta["spec"] = IndexSpec(**meta["spec"])
    except (TypeError, ValueError) as err:
        raise IndexFileError(f"{path}: {err}") from None
    if meta["spec"].kind == AUTO:
        raise IndexFileError(f"{path}: a saved index records the kind 'auto' chose, not 'auto'")
    return meta


def _vm_size() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise OSError("no VmSize in /proc/self/status")


def _read_index_bounded(path: Path):
    """faiss.read_index, after a trial read in a forked child whose address space is capped at what the file's
    length can hold: a file that declares more codes than it has (a hostile or corrupt header) fails there, before
    this process allocates anything. faiss's own errors come back with the file named."""
    size = path.stat().st_size
    try:
        import resource
    except ImportError:  # no fork / rlimit (Windows): faiss's own checks only
        resource = None
    if resource is not None and hasattr(os, "fork") and os.path.exists("/proc/self/status"):
        _trial_read(path, size, resource)
    try:
        return faiss.read_index(str(path))
    except RuntimeError as err:
        raise IndexFileError(f"{path} is not a readable faiss index: {_faiss_reason(err)}") from None


def _faiss_reason(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    reason = next((line for line in text if "Error" in line or "not recognized" in line or "error" in line), "")
    return (reason or (text[0] if text else type(err).__name__)).strip()


def _trial_read(path: Path, size: int, resource) -> None:
    read_fd, write_fd = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fork of a threaded process (torch, Lance): the child only reads a file
        pid = os.fork()
    if pid == 0:  # child: cap the address space, read, report, exit without running any parent cleanup
        code, message = 0, b""
        try:
            os.close(read_fd)
            limit = _vm_size() + 2 * size + (256 << 20)
            _, hard = resource.getrlimit(resource.RLIMIT_AS)
            if hard == resource.RLIM_INFINITY or limit < hard:
                resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
            faiss.read_index(str(path))
        except MemoryError:
            code = 3
        except BaseException as err:  # noqa: BLE001  (reported to the parent)
            code, message = 4, _faiss_reason(err).encode()[-2000:]
        try:
            os.write(write_fd, message)
        finally:
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as fh:
        message = fh.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code == 3 or (code == 4 and "bad_alloc" in message):
        raise IndexFileError(f"{path} declares more data than its {size:,} bytes can hold (a corrupt or hostile "
                             "header): refused before reading")
    if code == 4:
        raise IndexFileError(f"{path} is not a readable faiss index: {message}")
    if code != 0:
        log.warning("trial read of %s ended with status %s; reading it directly", path, code)


_KIND_CLASS = {"flat": "IndexFlat", "pca": "IndexFlat", "hnsw": "IndexHNSW", "ivfpq": "IndexIVFPQ"}


def _check_index(index, spec: IndexSpec, dim: int, n_places: int, path: Path, fmt: int) -> None:
    """The index in the file is the one places.json describes: kind, PCA, refine, metric, dim and size."""
    inner = _innermost(index)
    expected = getattr(faiss, _KIND_CLASS[spec.kind])
    if not isinstance(inner, expected):
        raise IndexFileError(f"{path} holds a {type(inner).__name__} index, but places.json describes a "
                             f"{spec.kind!r} index ({_KIND_CLASS[spec.kind]}): the two files are from different saves")
    outer = faiss.downcast_index(index)
    refined = isinstance(outer, faiss.IndexRefine)
    if refined != bool(spec.refine and spec.refine_from != "disk"):
        raise IndexFileError(f"{path} {'has' if refined else 'has no'} in-memory refine, places.json says refine="
                             f"{spec.refine}, refine_from={spec.refine_from!r}: the two files are from different saves")
    base = faiss.downcast_index(outer.base_index) if refined else outer
    has_pca = isinstance(base, faiss.IndexPreTransform)
    if has_pca != bool(spec.pca_dim and spec.pca_dim < dim):
        raise IndexFileError(f"{path} {'has' if has_pca else 'has no'} PCA, places.json says pca_dim={spec.pca_dim}")
    if index.d != dim:
        raise IndexFileError(f"{path} holds {index.d}-d vectors, places.json says dim {dim}")
    if index.ntotal != n_places:
        raise IndexFileError(f"{path} holds {index.ntotal} vectors but places.json lists {n_places} places: the "
                             "two files are from different saves")
    if fmt >= 2 and index.metric_type != spec.metric:
        raise IndexFileError(f"{path} searches with faiss metric {index.metric_type}, {spec.kind!r} needs "
                             f"{spec.metric}: the two files are from different saves")
