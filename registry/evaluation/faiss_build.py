"""faiss index construction and surgery: an empty index built (and trained) from an IndexSpec, PCA transforms
slimmed to their projection, search parameters set, the bytes an index holds."""
from __future__ import annotations

from typing import Optional

import numpy as np

from .index_spec import IndexSpec

try:
    import faiss
except ImportError:  # exact search falls back to torch in recall.search; the other kinds need faiss
    faiss = None

_OPQ_ITER, _OPQ_TRAIN = 8, 8192  # OPQ rotation: alternating rounds and training points


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
