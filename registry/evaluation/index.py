"""faiss indexes for large maps (exact flat, IVF-PQ, HNSW, PCA-reduced) and PlaceIndex, the one-image query API.

All indexes rank by inner product of L2-normalised descriptors (cosine similarity); a PCA-reduced index projects
with a PCA fitted on the database and re-normalises before searching. A model with a fitted whitening can instead
keep its whitening's leading components: `registry.create(name, pretrained=..., descriptor_dim=k)`.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple, Union

import numpy as np

try:
    import faiss
except ImportError:  # exact search falls back to torch in recall.search; the other kinds need faiss
    faiss = None

PathLike = Union[str, os.PathLike]
INDEX_KINDS = ("flat", "ivfpq", "hnsw", "pca")
DEFAULT_PCA_DIM = 256
_ADD_CHUNK = 16384
_TRAIN_PER_CENTROID = 40  # faiss's rule of thumb; fewer only warns


@dataclass(frozen=True)
class IndexSpec:
    """Which faiss index and the parameters that matter.

    kind: 'flat' (exact), 'ivfpq' (nlist lists, m sub-quantisers of nbits bits, nprobe lists searched), 'hnsw'
    (hnsw_m links per node, ef_construction / ef_search beam widths) or 'pca' (exact search on pca_dim-d PCA
    projections). pca_dim also prefixes an 'ivfpq' or 'hnsw' index with the same projection.
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

    def __post_init__(self) -> None:
        if self.kind not in INDEX_KINDS:
            raise ValueError(f"index must be one of {', '.join(INDEX_KINDS)}, got {self.kind!r}")
        if self.kind == "pca" and self.pca_dim is None:
            object.__setattr__(self, "pca_dim", DEFAULT_PCA_DIM)

    def search_dim(self, dim: int) -> int:
        """Dimension the index searches in (after any PCA)."""
        return min(self.pca_dim, dim) if self.pca_dim else dim

    def resolved(self, n: int, dim: int) -> "IndexSpec":
        """This spec with nlist and m filled in for `n` database vectors of `dim` dims."""
        if self.kind != "ivfpq":
            return self
        d = self.search_dim(dim)
        nlist = self.nlist or max(1, min(int(4 * np.sqrt(n)), n // 39))
        m = self.m or max(v for v in range(1, max(1, min(64, d // 4)) + 1) if d % v == 0)
        return replace(self, nlist=nlist, m=m)

    def factory(self, dim: int) -> str:
        """The faiss index_factory string (nlist and m resolved)."""
        prefix = f"PCA{self.search_dim(dim)},L2norm," if self.pca_dim and self.pca_dim < dim else ""
        if self.kind in ("flat", "pca"):
            return prefix + "Flat"
        if self.kind == "hnsw":
            return prefix + f"HNSW{self.hnsw_m},Flat"
        return prefix + f"IVF{self.nlist},PQ{self.m}x{self.nbits}"

    @property
    def needs_training(self) -> bool:
        """Whether building this index needs database vectors to train on (IVF-PQ's lists and codes, a PCA)."""
        return self.kind == "ivfpq" or bool(self.pca_dim)

    def min_train(self) -> int:
        """Fewest training vectors this index accepts."""
        need = 1
        if self.kind == "ivfpq":
            need = max(self.nlist or 1, 2**self.nbits)
        if self.pca_dim:
            need = max(need, 2)
        return need


def _need_faiss(kind: str) -> None:
    if faiss is None:
        raise ImportError(f"index={kind!r} needs faiss: pip install faiss-cpu (or faiss-gpu)")


def normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, as contiguous float32."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def build_index(spec: IndexSpec, dim: int, train: Optional[np.ndarray] = None, n_hint: Optional[int] = None):
    """An empty faiss index for `spec` (IVF-PQ and PCA trained on `train`, L2-normalised rows); nothing added."""
    _need_faiss(spec.kind)
    n = n_hint or (len(train) if train is not None else 0)
    spec = spec.resolved(max(n, 1), dim)
    if spec.kind == "ivfpq" and spec.search_dim(dim) % spec.m:
        raise ValueError(f"IVF-PQ needs m dividing the descriptor dim {spec.search_dim(dim)}, got m={spec.m}")
    index = faiss.index_factory(dim, spec.factory(dim), faiss.METRIC_INNER_PRODUCT)
    if spec.kind == "ivfpq":  # polysemous codes serve only Hamming-filtered search (unused): skip their training
        faiss.downcast_index(faiss.extract_index_ivf(index)).do_polysemous_training = False
    if not index.is_trained:
        if train is None or len(train) < spec.min_train():
            got = 0 if train is None else len(train)
            raise ValueError(f"{spec.kind} index with nlist={spec.nlist}, nbits={spec.nbits}, pca_dim={spec.pca_dim} "
                             f"needs >= {spec.min_train()} database vectors to train, got {got}: use index='flat' "
                             "or a smaller nbits / nlist")
        index.train(normalise(train))
    _set_search_params(index, spec)
    return index


def _set_search_params(index, spec: IndexSpec) -> None:
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexPreTransform) else index
    if spec.kind == "ivfpq":
        faiss.extract_index_ivf(index).nprobe = min(spec.nprobe, spec.nlist)
    elif spec.kind == "hnsw":
        inner.hnsw.efSearch = spec.ef_search
        inner.hnsw.efConstruction = spec.ef_construction


def index_bytes(index) -> int:
    """Bytes faiss writes for this index (its memory, within a few kB of headers)."""
    writer = faiss.VectorIOWriter()
    faiss.write_index(index, writer)
    return int(writer.data.size())


class PlaceIndex:
    """A searchable map: descriptors with their place ids in a faiss index; `query(image, k)` for a robot's frame.

    >>> index = PlaceIndex(model.descriptor_dim, IndexSpec("hnsw"), model=model)
    >>> index.add(database_descriptors, places=place_ids)
    >>> index.query("frame.jpg", k=5)   # [(place id, distance), ...] nearest first
    Distances are squared L2 distances of the unit descriptors (2 - 2 cosine similarity).
    """

    def __init__(self, dim: int, spec: IndexSpec = IndexSpec(), model: Optional[Any] = None) -> None:
        self.dim = int(dim)
        self.spec = spec
        self.model = model
        self.places: List[Any] = []
        self._index = None

    @property
    def ntotal(self) -> int:
        return 0 if self._index is None else int(self._index.ntotal)

    @property
    def faiss_index(self):
        return self._index

    def memory_bytes(self) -> int:
        """Bytes the index holds (what faiss serialises); 0 before anything is added."""
        return 0 if self._index is None else index_bytes(self._index)

    def train(self, descriptors: np.ndarray, max_train: int = 100_000, seed: int = 0) -> None:
        """Train IVF-PQ / PCA on (a sample of) these descriptors; flat and HNSW need no training."""
        n = len(descriptors)
        self.spec = self.spec.resolved(n, self.dim)
        sample = None
        if self.spec.needs_training:  # flat and HNSW read nothing here (a store's memmap stays on disk)
            pick = np.sort(np.random.default_rng(seed).choice(n, min(n, max_train), replace=False))
            sample = np.asarray(descriptors[pick])
        self._index = build_index(self.spec, self.dim, sample, n_hint=n)

    def set_search_params(self, nprobe: Optional[int] = None, ef_search: Optional[int] = None) -> "PlaceIndex":
        """Retune a built index at query time, no rebuild: IVF-PQ's `nprobe` lists searched, HNSW's `ef_search`
        beam width (higher: slower, closer to exact search). Kept in `spec`, so `save` / `load` keep it too."""
        changes = {k: int(v) for k, v in (("nprobe", nprobe), ("ef_search", ef_search)) if v is not None}
        for key, value in changes.items():
            if value < 1:
                raise ValueError(f"{key} must be >= 1, got {value}")
        wrong = {"nprobe": "ivfpq", "ef_search": "hnsw"}
        misplaced = [k for k in changes if wrong[k] != self.spec.kind]
        if misplaced:
            raise ValueError(f"{', '.join(misplaced)} does not apply to a {self.spec.kind!r} index "
                             "(nprobe: ivfpq, ef_search: hnsw)")
        self.spec = replace(self.spec, **changes)
        if self._index is not None:
            _set_search_params(self._index, self.spec)
        return self

    def add(self, descriptors: np.ndarray, places: Optional[Sequence[Any]] = None) -> None:
        """Append descriptors (an array or a store's memmap, read in chunks) and their place ids (default: row ids)."""
        if descriptors.ndim != 2 or descriptors.shape[1] != self.dim:
            raise ValueError(f"PlaceIndex of dim {self.dim} got descriptors of shape {descriptors.shape}")
        if places is not None and len(places) != len(descriptors):
            raise ValueError(f"{len(places)} place ids for {len(descriptors)} descriptors")
        if self._index is None:
            self.train(descriptors)
        start = self.ntotal
        for s in range(0, len(descriptors), _ADD_CHUNK):
            self._index.add(normalise(descriptors[s : s + _ADD_CHUNK]))
        self.places.extend(range(start, start + len(descriptors)) if places is None else places)

    def search(self, descriptors: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
        """(distances, row ids), each (Nq, k), nearest first; -1 ids pad when fewer than k are found."""
        if self._index is None or self.ntotal == 0:
            raise ValueError("the PlaceIndex is empty: add() database descriptors first")
        sims, ids = self._index.search(normalise(np.atleast_2d(descriptors)), min(k, self.ntotal))
        return np.where(ids >= 0, np.maximum(2.0 - 2.0 * sims, 0.0), np.inf).astype(np.float32), ids.astype(np.int64)

    def query(self, image: Any, k: int = 5) -> List[Tuple[Any, float]]:
        """Top-k (place, distance) of one image (a path, PIL image or preprocessed (3, H, W) tensor), nearest first."""
        if self.model is None:
            raise ValueError("query(image) needs the model: PlaceIndex(..., model=model) or load(folder, model=model)")
        dists, ids = self.search(self._describe(image), k)
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
            image = Preprocess(self.model.input_config)(image.convert("RGB"))
        device = next(self.model.parameters()).device
        with torch.inference_mode():
            was_training = self.model.training
            self.model.eval()
            out = self.model(image.unsqueeze(0).to(device))
            self.model.train(was_training)
        return F.normalize(out.float(), dim=-1).cpu().numpy()

    def save(self, folder: PathLike) -> Path:
        """Write index.faiss and places.json (spec, dim, place ids) to `folder`."""
        if self._index is None:
            raise ValueError("nothing to save: the PlaceIndex is empty")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self._index, str(folder / "index.faiss"))
        (folder / "places.json").write_text(json.dumps({"dim": self.dim, "spec": asdict(self.spec),
                                                        "places": list(self.places)}))
        return folder

    @classmethod
    def load(cls, folder: PathLike, model: Optional[Any] = None) -> "PlaceIndex":
        """A PlaceIndex written by `save` (pass `model` to query images)."""
        folder = Path(folder)
        meta = json.loads((folder / "places.json").read_text())
        out = cls(meta["dim"], IndexSpec(**meta["spec"]), model=model)
        out._index = faiss.read_index(str(folder / "index.faiss"))
        _set_search_params(out._index, out.spec)
        out.places = meta["places"]
        return out
