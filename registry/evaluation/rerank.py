"""k-reciprocal re-ranking (Zhong, Zheng, Cao, Li, "Re-ranking person re-identification with k-reciprocal
encoding", CVPR 2017), implemented from the paper's description.

Over the set S = queries + database, with d(a, b) = ||a - b||^2 of L2-normalised descriptors:
N(p, k) is p's k nearest neighbours in S (p itself first); R(p, k) = {g in N(p, k) : p in N(g, k)}; R*(p, k1)
adds R(c, k1/2) for each c in R(p, k1) that shares at least 2/3 of it with R(p, k1). V_p has entries
exp(-d(p, g)) on R*(p, k1), is averaged over p's k2 nearest neighbours (local query expansion; k2=1
turns it off), and d_J(p, g) = 1 - sum(min(V_p, V_g)) / sum(max(V_p, V_g)). The final distance is
(1 - lambda) d_J + lambda d, used to re-order each query's `top_k` shortlist. Cost: a k-NN search of
S against itself, O((Nq + Ndb)^2 D), so use it on small and medium databases.
"""
from __future__ import annotations

from typing import List

import numpy as np
from scipy import sparse

from .recall import normalise, search

_CHUNK = 4096


def _reciprocal(nn: np.ndarray, k: int) -> List[np.ndarray]:
    """R(i, k) for every i: the members of N(i, k) that have i in their own N(., k)."""
    top = nn[:, : k + 1]
    out: List[np.ndarray] = []
    for start in range(0, len(top), _CHUNK):
        rows = top[start : start + _CHUNK]
        ids = np.arange(start, start + len(rows))[:, None, None]
        mutual = (top[rows] == ids).any(-1)
        out += [r[m] for r, m in zip(rows, mutual)]
    return out


def _expanded(full: List[np.ndarray], half: List[np.ndarray]) -> List[np.ndarray]:
    """R*(i, k1): R(i, k1) plus each candidate's R(c, k1/2) that overlaps it by at least 2/3."""
    out = []
    for members in full:
        grown = [members]
        for c in members:
            if len(np.intersect1d(half[c], members)) >= 2.0 / 3.0 * len(half[c]):
                grown.append(half[c])
        out.append(np.unique(np.concatenate(grown)))
    return out


def _encode(x: np.ndarray, rstar: List[np.ndarray]) -> sparse.csr_matrix:
    """Sparse V: row i holds exp(-d(i, g)) for g in R*(i)."""
    rows = np.repeat(np.arange(len(x)), [len(r) for r in rstar])
    cols = np.concatenate(rstar)
    d = np.maximum(2.0 - 2.0 * np.einsum("ij,ij->i", x[rows], x[cols]), 0.0)
    return sparse.csr_matrix((np.exp(-d), (rows, cols)), shape=(len(x), len(x)))


def _query_expand(v: sparse.csr_matrix, nn: np.ndarray, k2: int) -> sparse.csr_matrix:
    """Each row replaced by the mean of the rows of its k2 nearest neighbours (itself included)."""
    n = v.shape[0]
    rows = np.repeat(np.arange(n), k2)
    avg = sparse.csr_matrix((np.full(n * k2, 1.0 / k2), (rows, nn[:, :k2].ravel())), shape=(n, n))
    return (avg @ v).tocsr()


def k_reciprocal_rerank(
    q: np.ndarray,
    db: np.ndarray,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    top_k: int = 100,
) -> np.ndarray:
    """(Nq, top_k) database indices: each query's exact top_k shortlist re-ordered by the k-reciprocal distance."""
    if k1 < 1 or k2 < 1 or not 0.0 <= lambda_value <= 1.0:
        raise ValueError(f"need k1 >= 1, k2 >= 1 and 0 <= lambda <= 1, got k1={k1}, k2={k2}, lambda={lambda_value}")
    q, db = normalise(q), normalise(db)
    nq, x = len(q), np.concatenate([q, db])
    shortlist = search(q, db, top_k)
    nn = search(x, x, min(max(k1 + 1, k2), len(x)))
    rstar = _expanded(_reciprocal(nn, k1), _reciprocal(nn, max(1, round(k1 / 2))))
    v = _query_expand(_encode(x, rstar), nn, min(k2, nn.shape[1]))
    v_sum = np.asarray(v.sum(axis=1)).ravel()
    out = np.empty_like(shortlist)
    for i, cand in enumerate(shortlist):
        vp = v[i].toarray().ravel()
        vc = v[cand + nq]
        owner = np.repeat(np.arange(len(cand)), np.diff(vc.indptr))
        inter = np.bincount(owner, weights=np.minimum(vc.data, vp[vc.indices]), minlength=len(cand))
        union = v_sum[i] + v_sum[cand + nq] - inter
        jaccard = 1.0 - np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        original = np.maximum(2.0 - 2.0 * db[cand] @ q[i], 0.0)
        final = (1.0 - lambda_value) * jaccard + lambda_value * original
        out[i] = cand[np.argsort(final, kind="stable")]
    return out
