"""Which faiss index a map uses: IndexSpec (the kind and the parameters that matter, its faiss factory string),
the `auto` policy that picks one from the map size, the dimension and a memory budget (choose_index), and the
memory-size parser of --memory-budget (parse_bytes)."""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Optional, Union

import numpy as np

try:
    import faiss
except ImportError:  # IndexSpec.metric needs faiss; the spec itself does not
    faiss = None

INDEX_KINDS = ("flat", "ivfpq", "hnsw", "pca")
AUTO = "auto"  # IndexSpec("auto"): chosen from the map size, the dimension and a memory budget (choose_index)
REFINE_FROM = ("disk", "fp16", "sq8")
DEFAULT_PCA_DIM = 256
# upper bounds of the search and graph parameters, checked before faiss allocates anything (an ef_search of 2e9
# allocates its beam per query; an hnsw_m of 3e9 its link table per node). They cover every documented setting
# (efSearch up to 1024, refine up to 32, nlist 4096 and nprobe up to nlist) with room to spare.
MAX_EF, MAX_REFINE, MAX_HNSW_M, MAX_NLIST = 65536, 1024, 512, 1 << 20


_OPTIONAL = ("pca_dim", "nlist", "m", "refine", "memory_budget")  # fields whose None means "none" or "chosen later"


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
        bounds = {"nbits": (1, 16), "nprobe": (1, MAX_NLIST), "hnsw_m": (2, MAX_HNSW_M),
                  "ef_construction": (1, MAX_EF), "ef_search": (1, MAX_EF), "pca_dim": (1, None),
                  "nlist": (1, MAX_NLIST), "m": (1, None), "refine": (1, MAX_REFINE), "memory_budget": (1, None)}
        for name, (low, high) in bounds.items():
            value = getattr(self, name)
            if value is None and name in _OPTIONAL:
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


# the measured map-size curve (one thread): a flat scan of 10^4 x 256 takes ~0.2 ms and of 10^5 x 256 5-12 ms;
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
    """The index the measured map-size curve (README, "Large maps") says keeps recall for `n` vectors of `dim`
    dims in `memory_budget` bytes of RAM (None: no limit): exact search while a scan stays within a few ms
    (n * dim <= AUTO_FLAT_WORK) and the vectors fit; beyond, IVF-PQ (PCA to 256 dims first above 1024 dims; 1024
    lists, 4096 beyond 2 * 10^6 images) whose k * 16 shortlist is re-ranked from float16 vectors on disk: RAM holds
    the codes and ids, m + 8 bytes per image."""
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
            number = float(raw[: len(raw) - len(unit)]) * units.get(unit, 1)
        except ValueError:
            raise ValueError(f"memory size {text!r} is not a size: write e.g. 8GB, 512MiB or 1e9") from None
        if not math.isfinite(number):
            raise ValueError(f"memory size {text!r} is not a finite size: write e.g. 8GB, 512MiB or 1e9")
        value = int(number)
    if value < 1:
        raise ValueError(f"memory size must be positive, got {text!r}")
    return value
