"""Cost as the map grows: index memory, build time, batch-1 query latency and Recall@1/5 from 10^3 to 10^6 images.

Two phases, both resumable:

  python benchmarks/bench_map_scale.py extract --work /tmp/map_scale   # real descriptors into descriptor stores
  python benchmarks/bench_map_scale.py measure --work /tmp/map_scale   # the table (JSON + Markdown) and the plot
  python benchmarks/bench_map_scale.py report                         # re-render both from map_scale.json
  python benchmarks/bench_map_scale.py reductions --work /tmp/map_scale  # recall of PCA / whitening sizes, real map

`measure --sizes 10000 100000` measures only those sizes; rows already in map_scale.json are kept and skipped.
Real descriptors from the released models (`clusvpr_vgg16.nordland`, `netvlad_vgg16.nordland`, bundled, each at its
own 96x192 input): queries are the Nordland winter frames of the test places 2001..2400 (never seen in training) and
the Corridor queries; the database is the whole Nordland summer traversal (places 1..2400) and the Corridor
reference images. The reduced series keep the 256 leading components of a PCA whitening fitted on the map's real
database descriptors (registry.whitening.PCAWhitening, as the runner's --whitening fit; these releases ship none).
Distractors: each is a random convex mix of two real database descriptors of *other* places
(never a query's positive) plus Gaussian noise, re-normalised; see benchmarks/results/map-scale.md for
what that flatters.
Everything runs on one thread (OMP_NUM_THREADS=1).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
from tqdm import tqdm

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
MODELS = ("clusvpr_vgg16", "netvlad_vgg16")  # their default (bundled) releases
QUERY_PLACES = (2001, 2400)  # Nordland winter queries: the test places (1-based, inclusive), unseen in training
TOLERANCE = 1  # Nordland positives: the same place +-1
SIZES = (10**3, 10**4, 10**5, 10**6)


def nordland_lists(data: Path) -> Tuple[List[str], List[str], List[np.ndarray]]:
    """(queries, database, positives): winter frames of QUERY_PLACES against the whole summer traversal."""
    names = sorted(p.name for p in (data / "nordland" / "summer").iterdir())
    db = [str(data / "nordland" / "summer" / n) for n in names]
    picks = range(QUERY_PLACES[0] - 1, QUERY_PLACES[1])
    q = [str(data / "nordland" / "winter" / names[i]) for i in picks]
    pos = [np.arange(max(0, i - TOLERANCE), min(len(names), i + TOLERANCE + 1)) for i in picks]
    return q, db, pos


def real_sets(data: Path):
    """(queries, database, positives) of Nordland + Corridor, database indices of the concatenation."""
    from registry.datasets import load_dataset

    nq, ndb, npos = nordland_lists(data)
    cor = load_dataset("corridor", data_root=data)
    q = nq + [str(p) for p in cor.q_images]
    db = ndb + [str(p) for p in cor.db_images]
    pos = npos + [np.asarray(p) + len(ndb) for p in cor.positives]
    return q, db, pos


# ---------------------------------------------------------------------------------------------------- extraction
def extract(work: Path, models: Sequence[str] = MODELS) -> None:
    """Descriptors of the queries and the database by each released model, streamed to resumable stores."""
    import torch

    import registry
    from registry.evaluation import extract_to_store

    torch.set_num_threads(1)
    q, db, _ = real_sets(DATA)
    for name in models:
        model = registry.create(name, pretrained=True).eval()
        print(f"{name}: {model.config['source']}, input {model.input_config['input_size']}", flush=True)
        for part, images in (("queries", q), ("database", db)):
            start = time.perf_counter()
            store = extract_to_store(model, images, work / f"{name}_{part}", chunk_size=256, batch_size=32,
                                     device="cpu", progress=True)
            print(f"{name} {part}: {store.descriptors.shape} in {time.perf_counter() - start:.0f} s", flush=True)
            np.save(work / f"{name}_{part}.npy", np.asarray(store.descriptors))  # what the measurements read



# ---------------------------------------------------------------------------------------------------- the curve
PCA_DIM = 256
# (series, model, PCA dim or None, {index kind: largest database size measured})
SERIES = (
    ("ClusVPR whitened-256", "clusvpr_vgg16", PCA_DIM, {"flat": 10**6, "ivfpq": 10**6, "hnsw": 10**6}),
    ("ClusVPR 8192", "clusvpr_vgg16", None, {"flat": 10**5, "ivfpq": 10**5, "hnsw": 10**4}),
    ("NetVLAD whitened-256", "netvlad_vgg16", PCA_DIM, {"flat": 10**6, "ivfpq": 10**6, "hnsw": 10**5}),
    ("NetVLAD 32768", "netvlad_vgg16", None, {"flat": 10**4}),
)
MAX_NLIST = 1024
SEARCH_PARAM = {"ivfpq": "nprobe", "hnsw": "ef_search"}
# search-time operating points of each index (the first is the default IndexSpec's); retuned without a rebuild
OPERATING_POINTS = {"flat": (None,), "ivfpq": (16, 64, 256), "hnsw": (64, 256, 1024)}
LATENCY_QUERIES = 100
MAX_TRAIN = {True: 50_000, False: 10_000}  # IVF-PQ training sample: reduced dims / full dims


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def real_descriptors(work: Path, model: str, pca_dim):
    """(queries, positives, database rows: positives first, then other places; the reduction or None).

    Queries and database are in the model's full descriptor space; `reduce` maps full-space rows to the series'
    space: the `pca_dim` leading components of a PCA whitening fitted on the real database (None: full space).
    """
    _, _, pos = real_sets(DATA)
    q, db = (np.load(work / f"{model}_{part}.npy") for part in ("queries", "database"))
    positive_rows = np.unique(np.concatenate(pos))
    others = np.setdiff1d(np.arange(len(db)), positive_rows)
    order = np.concatenate([positive_rows, others])
    new_id = np.empty(len(db), dtype=np.int64)
    new_id[order] = np.arange(len(db))
    db = db[order]
    reduce = None
    if pca_dim:
        import torch

        from registry.whitening import PCAWhitening

        w = PCAWhitening(db.shape[1], pca_dim).fit(db)  # fewer rows than dims: the dual (Gram) form

        def reduce(x: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return w(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()

        reduce.whitening = w  # the fitted PCAWhitening (ProjectedDistractors draws in its space)

    return q, [new_id[p] for p in pos], db, len(positive_rows), reduce


def _distractor_draws(others: np.ndarray, start: int, n: int, seed: int):
    """(a, b, lam, noise) of distractors start..start+n-1: two distinct other-place rows, the mix weight and the
    full-space Gaussian noise; each chunk is seeded by its start."""
    rng = np.random.default_rng([seed, start])
    a = rng.integers(0, len(others), n)
    b = (a + rng.integers(1, len(others), n)) % len(others)
    lam = rng.random((n, 1), dtype=np.float32)
    noise = rng.standard_normal((n, others.shape[1]), dtype=np.float32)
    return a, b, lam, noise


def _distractors(others: np.ndarray, start: int, n: int, seed: int) -> np.ndarray:
    """Distractors start..start+n-1 in the full space; each chunk is seeded by its start, so every series of one
    model (full or reduced) gets the same distractors, and any prefix is the smaller map."""
    a, b, lam, noise = _distractor_draws(others, start, n, seed)
    mix = lam * others[a] + (1 - lam) * others[b]
    noise *= 0.5 * np.linalg.norm(mix, axis=1, keepdims=True) / np.linalg.norm(noise, axis=1, keepdims=True)
    return _unit(mix + noise)


class ProjectedDistractors:
    """Whitened distractors drawn directly in the whitening's k-d space, exactly in distribution, in O(k) per row.

    The full-space distractor is x = unit(m + e), m = l a + (1 - l) b, e = n * 0.5 |m| / |n|, n ~ N(0, I_D), and
    the series stores unit(diag(lams)^-1/2 U^T (x - mu)) (PCAWhitening, U: D x k with orthonormal columns). Only
    U^T m, |m|^2, U^T n, |n|^2 and m.n enter. Split n = U z + n_perp and m = U p + m_perp: z = U^T n ~ N(0, I_k);
    of n_perp (isotropic in the (D - k)-d complement, independent of z) only t = n_perp.unit(m_perp) ~ N(0, 1) and
    c = |n_perp|^2 - t^2 ~ chi2(D - k - 1) matter, all independent. So |n|^2 = |z|^2 + t^2 + c,
    m.n = p.z + |m_perp| t, and p, |m|^2, |m_perp|^2 = |m|^2 - |p|^2 come from the real other rows' projections
    P = others U and Gram matrix. `from_draws` is the same map from explicit full-space noise (the algebra check)."""

    def __init__(self, others: np.ndarray, whitening) -> None:
        u = whitening.U.double().numpy()
        gram = u.T @ u
        if not np.allclose(gram, np.eye(u.shape[1]), atol=1e-6):
            raise ValueError(f"the whitening's components are not orthonormal (max |U^T U - I| = "
                             f"{np.abs(gram - np.eye(u.shape[1])).max():.2e}): the projected draw needs them so")
        x = np.asarray(others, dtype=np.float64)
        self.dim, self.k = x.shape[1], u.shape[1]
        self.n_others = len(x)
        self.P = x @ u
        self.G = x @ x.T
        self.Umu = whitening.mu.double().numpy() @ u
        self.scale = whitening.lams.double().numpy() ** -0.5
        self.orthonormality_error = float(np.abs(gram - np.eye(self.k)).max())

    def _mix(self, a, b, lam):
        lam = np.asarray(lam, dtype=np.float64).reshape(-1)
        p = lam[:, None] * self.P[a] + (1 - lam)[:, None] * self.P[b]
        mm = lam**2 * self.G[a, a] + 2 * lam * (1 - lam) * self.G[a, b] + (1 - lam) ** 2 * self.G[b, b]
        return p, mm, np.sqrt(np.maximum(mm - (p * p).sum(1), 0.0))

    def project(self, p, mm, m_perp, z, t, c) -> np.ndarray:
        """The whitened, re-normalised distractors from the mix's (p, |m|^2, |m_perp|) and the noise's (z, t, c)."""
        nn = (z * z).sum(1) + t**2 + c
        mn = (p * z).sum(1) + m_perp * t
        alpha = 0.5 * np.sqrt(mm / nn)
        s = np.sqrt(mm + 2 * alpha * mn + alpha**2 * nn)  # |m + e|
        y = ((p + alpha[:, None] * z) / s[:, None] - self.Umu) * self.scale
        return _unit(y)

    def from_draws(self, others: np.ndarray, a, b, lam, noise, u: np.ndarray) -> np.ndarray:
        """The same distractors from explicit full-space draws (the old generator's), for checking the algebra."""
        n = np.asarray(noise, dtype=np.float64)
        z = n @ u
        mix = np.asarray(lam, np.float64) * others[a] + (1 - np.asarray(lam, np.float64)) * others[b]
        m_perp = mix - (mix @ u) @ u.T
        n_perp = n - z @ u.T
        unit_perp = m_perp / np.linalg.norm(m_perp, axis=1, keepdims=True)
        t = (n_perp * unit_perp).sum(1)
        c = (n_perp * n_perp).sum(1) - t**2
        return self.project(*self._mix(a, b, lam), z, t, c)

    def draw(self, start: int, n: int, seed: int) -> np.ndarray:
        """Distractors start..start+n-1 (float32 unit rows of the whitened space); each chunk seeded by its start."""
        rng = np.random.default_rng([seed, start, 1])
        a = rng.integers(0, self.n_others, n)
        b = (a + rng.integers(1, self.n_others, n)) % self.n_others
        lam = rng.random(n)
        z = rng.standard_normal((n, self.k))
        t = rng.standard_normal(n)
        c = rng.chisquare(self.dim - self.k - 1, n)
        return self.project(*self._mix(a, b, lam), z, t, c)


def projected_database_file(work: Path, label: str, db: np.ndarray, n_pos: int, n_max: int, whitening,
                            seed: int = 0, chunk: int = 1 << 17) -> Path:
    """(n_max, k) float32 .npy of a whitened series: the real rows whitened, then ProjectedDistractors (the same
    construction as database_file's, drawn in the whitened space: ~100x faster, so 10^7 rows fit in minutes).
    Written in chunks through a memmap, renamed into place when complete; prefixes give the smaller maps."""
    path = work / f"db_{label.replace(' ', '_').replace(',', '')}_{n_max}.npy"
    if path.exists():
        return path
    import torch

    gen = ProjectedDistractors(db[n_pos:], whitening)
    tmp = path.with_suffix(".tmp.npy")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n_max, gen.k))
    real = min(len(db), n_max)
    with torch.inference_mode():
        out[:real] = whitening(torch.from_numpy(np.ascontiguousarray(db[:real], dtype=np.float32))).numpy()
    for s in tqdm(range(real, n_max, chunk), desc=f"projected distractors {label}"):
        out[s : s + chunk] = gen.draw(s, min(chunk, n_max - s), seed)
    out.flush()
    del out
    os.replace(tmp, path)
    return path


def database_file(work: Path, label: str, db: np.ndarray, n_pos: int, n_max: int, reduce=None,
                  seed: int = 0) -> np.ndarray:
    """Memory-mapped (n_max, D) database: the real rows, then distractors mixed from the real *other* places.

    Distractor = unit(l * a + (1 - l) * b + e) in the model's full descriptor space: a, b two distinct real database
    descriptors of places that are no query's positive, l ~ U(0, 1), e Gaussian with norm 0.5 * ||l a + (1 - l) b||;
    a reduced series stores `reduce` of the same rows. Prefixes give the smaller maps.
    """
    path = work / f"db_{label.replace(' ', '_')}_{n_max}.npy"
    if path.exists():
        return np.load(path, mmap_mode="r")
    reduce = reduce or (lambda x: x)
    dim = reduce(db[:1]).shape[1]
    tmp = path.with_suffix(".tmp.npy")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n_max, dim))
    real = min(len(db), n_max)
    out[:real] = reduce(db[:real])
    others = db[n_pos:]
    chunk = max(256, 2**25 // db.shape[1])  # 128 MB of full-space rows at a time
    for s in tqdm(range(real, n_max, chunk), desc=f"distractors {label}", leave=False):
        out[s : s + chunk] = _unit(reduce(_distractors(others, s, min(chunk, n_max - s), seed)))
    out.flush()
    del out
    os.replace(tmp, path)
    return np.load(path, mmap_mode="r")


class RowFile:
    """Rows of a (n, d) float32 .npy read with plain file reads, never memory-mapped: what an index build reads
    does not stay in the process's RSS, so a row's peak RSS is the index's. Slicing the leading axis gives a lazy
    view; np.asarray(view) reads it; integer arrays read those rows (sorted reads)."""

    def __init__(self, path: Path, start: int = 0, stop=None) -> None:
        header = np.load(path, mmap_mode="r")
        self.path, self._offset, self._dim = Path(path), header.offset, header.shape[1]
        assert header.dtype == np.float32 and header.flags.c_contiguous, path
        self._start, self._stop = start, header.shape[0] if stop is None else stop
        del header
        self.dtype, self.ndim = np.dtype(np.float32), 2

    @property
    def shape(self):
        return (self._stop - self._start, self._dim)

    def __len__(self) -> int:
        return self._stop - self._start

    def _read(self, first: int, count: int) -> np.ndarray:
        with open(self.path, "rb") as fh:
            fh.seek(self._offset + 4 * self._dim * (self._start + first))
            return np.fromfile(fh, dtype=np.float32, count=count * self._dim).reshape(count, self._dim)

    def __getitem__(self, key):
        if isinstance(key, slice):
            first, stop, step = key.indices(len(self))
            assert step == 1, "RowFile slices are contiguous"
            return RowFile(self.path, self._start + first, self._start + max(first, stop))
        ids = np.asarray(key)
        if len(ids) and (ids.min() < 0 or ids.max() >= len(self)):
            raise IndexError(f"row ids outside 0..{len(self) - 1}")
        out = np.empty((len(ids), self._dim), dtype=np.float32)
        row_bytes = 4 * self._dim
        with open(self.path, "rb") as fh:
            for j in np.argsort(ids, kind="stable"):
                out[j] = np.frombuffer(os.pread(fh.fileno(), row_bytes, self._offset + row_bytes * (self._start +
                                                                                                   int(ids[j]))),
                                       dtype=np.float32)
        return out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        x = self._read(0, len(self))
        return x if dtype is None else x.astype(dtype, copy=False)


def rss_reset() -> int:
    """Reset this process's peak RSS (VmHWM) to its current RSS (Linux: /proc/self/clear_refs); the RSS in bytes."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_bytes("VmRSS")


def rss_peak() -> int:
    """Peak RSS (VmHWM) in bytes since the last rss_reset()."""
    return _status_bytes("VmHWM")


def _status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise OSError(f"no {field} in /proc/self/status")


def _nlist(n: float) -> int:
    """IVF lists for n images: faiss's 4 sqrt(n), at least 39 training vectors per list, at most MAX_NLIST."""
    return max(1, min(int(4 * np.sqrt(n)), int(n // 39), MAX_NLIST))


def _spec(kind: str, n: int, dim: int):
    from registry.evaluation import IndexSpec

    if kind == "ivfpq":
        return IndexSpec("ivfpq", nlist=_nlist(n), m=64 if dim >= 4096 else 32, nbits=8, nprobe=16)
    return IndexSpec(kind)  # flat; hnsw: M 32, efConstruction 40, efSearch 64


def _file_bytes(index, work: Path) -> int:
    import faiss

    path = work / "index_size.faiss"
    faiss.write_index(index, str(path))
    size = path.stat().st_size
    path.unlink()
    return size


def _search_param(kind: str, value) -> str:
    return f"{SEARCH_PARAM[kind]}={value}" if kind in SEARCH_PARAM else ""


def measure_one(label: str, kind: str, n: int, q: np.ndarray, pos, db: np.ndarray, work: Path,
                skip: Sequence[str] = ()) -> List[Dict]:
    """Build one index of the first n rows; one row per operating point (OPERATING_POINTS) not in `skip`."""
    from registry.evaluation import PlaceIndex, recall_from_predictions

    dim = db.shape[1]
    index = PlaceIndex(dim, _spec(kind, n, dim))
    start = time.perf_counter()
    if kind == "ivfpq":
        index.train(db[:n], max_train=MAX_TRAIN[dim < 4096])
    index.add(db[:n])
    build_s = time.perf_counter() - start
    size = _file_bytes(index.faiss_index, work)
    rows = []
    for value in OPERATING_POINTS[kind]:
        if _search_param(kind, value) in skip:
            continue
        if value is not None:
            index.set_search_params(**{SEARCH_PARAM[kind]: value})
        pred = index.search(q, 5)[1]  # recall: all queries in one batch
        lat = []
        for i in np.linspace(0, len(q) - 1, LATENCY_QUERIES).round().astype(int):  # latency: one query at a time
            t = time.perf_counter()
            index.search(q[i : i + 1], 5)
            lat.append(1000 * (time.perf_counter() - t))
        recall = recall_from_predictions(pred, pos, (1, 5))["recall"]
        rows.append({"series": label, "dim": dim, "n": n, "index": kind, "factory": index.spec.factory(dim),
                     "search": _search_param(kind, value), "default": value == OPERATING_POINTS[kind][0],
                     "bytes": size, "bytes_per_image": size / n, "build_s": build_s,
                     "latency_ms_median": statistics.median(lat), "latency_ms_p99": float(np.percentile(lat, 99)),
                     "recall_1": recall[1], "recall_5": recall[5], "num_queries": len(q),
                     "latency_queries": len(lat)})
    del index
    return rows


def measure(work: Path, out: Path, series: Sequence[str] = (), sizes: Sequence[int] = SIZES) -> None:
    import faiss

    faiss.omp_set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    table = out / "map_scale.json"
    rows: List[Dict] = json.loads(table.read_text()) if table.exists() else []
    data = {}
    for n in sizes:  # size by size, so an interrupted run still leaves a coherent curve (rows are kept)
        for label, model, pca_dim, limits in SERIES:
            if series and label not in series:
                continue
            for kind in ("flat", "ivfpq", "hnsw"):
                done = {r["search"] for r in rows if (r["series"], r["index"], r["n"]) == (label, kind, n)}
                todo = {_search_param(kind, v) for v in OPERATING_POINTS[kind]} - done
                if n > limits.get(kind, 0) or not todo:
                    continue
                if label not in data:
                    q, pos, real, n_pos, reduce = real_descriptors(work, model, pca_dim)
                    db = database_file(work, label, real, n_pos, max(limits.values()), reduce)
                    data[label] = (q if reduce is None else reduce(q), pos, db)
                for row in measure_one(label, kind, n, *data[label], work, skip=done):
                    rows.append(row)
                    print(f"{label:20s} {kind:5s} {row['search']:14s} n={n:>7d}  {row['bytes_per_image']:8.0f} B/img"
                          f"  build {row['build_s']:7.1f} s  query {row['latency_ms_median']:8.2f} ms (p99 "
                          f"{row['latency_ms_p99']:8.2f})  R@1 {row['recall_1']:5.1f}  R@5 {row['recall_5']:5.1f}",
                          flush=True)
                table.write_text(json.dumps(rows, indent=1))
    write_report(rows, out)


GIB = 2**30


def _gb(x: float) -> str:
    return f"{x / 1e9:,.1f} GB" if x >= 1e8 else f"{x / 1e6:,.1f} MB"


def _loss(row: Dict, rows: Sequence[Dict]):
    exact = next((r for r in rows if r["series"] == row["series"] and r["index"] == "flat" and r["n"] == row["n"]),
                 None)
    if exact is None:
        return None
    return exact["recall_1"] - row["recall_1"], exact["recall_5"] - row["recall_5"]


def storage_bytes(row: Dict, n: float) -> float:
    """Index bytes at `n` images from faiss's storage layout, fitted to the measured row (checked at the measured n).

    flat: 4 d per image; HNSW: the measured bytes per image (vectors + about 2 M links each); IVF-PQ: m code bytes +
    an 8-byte id per image, plus the coarse centroids (nlist x d floats) and the PQ codebooks (2^nbits x d floats).
    """
    if row["index"] == "flat":
        return 4.0 * row["dim"] * n
    if row["index"] == "hnsw":
        return row["bytes"] / row["n"] * n
    m, nbits = (int(v) for v in row["factory"].split("PQ")[1].split("x"))
    nlist = _nlist(n)
    return 4.0 * row["dim"] * (nlist + 2**nbits) + (m + 8) * n


def fits_up_to(row: Dict, budget: float = 24 * GIB) -> float:
    """Largest map (images) whose index fits in `budget` bytes."""
    lo, hi = 1.0, 1e12
    while hi / lo > 1.001:
        mid = np.sqrt(lo * hi)
        lo, hi = (mid, hi) if storage_bytes(row, mid) <= budget else (lo, mid)
    return lo


def _defaults(rows: Sequence[Dict]) -> List[Dict]:
    return [r for r in rows if r.get("default", True)]


def write_report(rows: Sequence[Dict], out: Path) -> None:
    """map_scale.md (the measured table, fit limits, paper extrapolation) and map_scale.png."""
    lines = ["| series | index (faiss) | search | images | index size | bytes/image | build s | query ms median | "
             "p99 | R@1 | R@5 | loss R@1 / R@5 vs exact |", "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    order = {label: i for i, (label, *_rest) in enumerate(SERIES)}
    kinds = {"flat": 0, "hnsw": 1, "ivfpq": 2}
    for r in sorted(rows, key=lambda r: (r["n"], order.get(r["series"], 99), kinds[r["index"]])):
        loss = _loss(r, rows)
        loss_text = "(exact)" if r["index"] == "flat" else ("exact does not fit" if loss is None else
                                                             f"{loss[0]:+.1f} / {loss[1]:+.1f}")
        lines.append(f"| {r['series']} | {r['factory']} | {r.get('search', '')} | {r['n']:,} | {_gb(r['bytes'])} | "
                     f"{r['bytes_per_image']:,.0f} | {r['build_s']:.2f} | {r['latency_ms_median']:.2f} | "
                     f"{r['latency_ms_p99']:.2f} | "
                     f"{r['recall_1']:.1f} | {r['recall_5']:.1f} | {loss_text} |")
    lines += ["", "| series | index | bytes/image at 10^6 | 10^6 images | 10^7 images | 10^8 images | "
              "largest map in 24 GiB |", "|---|---|---:|---:|---:|---:|---:|"]
    base = _defaults(rows)
    for key in dict.fromkeys((r["series"], r["index"]) for r in base):
        last = max((r for r in base if (r["series"], r["index"]) == key), key=lambda r: r["n"])
        sizes = [storage_bytes(last, n) for n in (1e6, 1e7, 1e8)]
        lines.append(f"| {key[0]} | {key[1]} | {sizes[0] / 1e6:,.0f} | {_gb(sizes[0])} | {_gb(sizes[1])} | "
                     f"{_gb(sizes[2])} | {fits_up_to(last):,.3g} |")
    (out / "map_scale.md").write_text("\n".join(lines) + "\n")
    _plot(rows, out / "map_scale.png")


def _plot(rows: Sequence[Dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ((ax1, ax3), (ax2, ax4)) = plt.subplots(2, 2, figsize=(13, 9.5))
    grid = np.logspace(3, 8, 26)
    base = _defaults(rows)
    keys = list(dict.fromkeys((r["series"], r["index"]) for r in base))
    style_of = {"flat": "-", "ivfpq": "--", "hnsw": ":"}
    for i, key in enumerate(keys):
        pts = sorted((r for r in base if (r["series"], r["index"]) == key), key=lambda r: r["n"])
        colour, style = f"C{i % 10}", style_of[key[1]]
        label = f"{key[0]} {key[1]}"
        ns = [r["n"] for r in pts]
        ax1.plot(ns, [r["latency_ms_median"] for r in pts], "o" + style, color=colour, label=label)
        ax3.plot(ns, [r["recall_1"] for r in pts], "o" + style, color=colour, label=label)
        ax2.plot(grid, [storage_bytes(pts[-1], n) / GIB for n in grid], style, color=colour, label=label)
        ax2.plot(ns, [r["bytes"] / GIB for r in pts], "o", color=colour)
        largest = max(r["n"] for r in rows if r["series"] == key[0])
        ops = [r for r in rows if (r["series"], r["index"], r["n"]) == (*key, largest)]
        ax4.plot([r["latency_ms_median"] for r in ops], [r["recall_1"] for r in ops], "o" + style, color=colour,
                 label=f"{label} ({largest:,})")
        for r in ops:
            if r.get("search"):
                ax4.annotate(r["search"].split("=")[1], (r["latency_ms_median"], r["recall_1"]), fontsize=6)
    ax2.axhline(24, color="k", lw=0.8)
    ax2.text(1.2e3, 28, "24 GiB (this machine's RAM)", fontsize=8)
    titles = {ax1: "batch-1 query latency, median ms (measured, 1 thread; default search parameters)",
              ax2: "index size, GiB (dots measured, lines from faiss's storage layout)",
              ax3: "Recall@1 (%) against the map size (default search parameters)",
              ax4: "Recall@1 against batch-1 latency at the largest map of each series\n"
                   "(labels: nprobe / efSearch)"}
    for ax, title in titles.items():
        ax.set_xscale("log")
        if ax in (ax1, ax2):
            ax.set_yscale("log")
        ax.set_xlabel("database images" if ax is not ax4 else "query ms (median)")
        ax.set_title(title, fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
    ax2.legend(fontsize=7, loc="lower right")
    ax4.legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def reductions(work: Path, out: Path, dims: Sequence[int] = (128, 256, 512, 1024)) -> None:
    """Recall@1/5 of the real map (no distractors) with each model's descriptor reduced to `dims` by a PCA (centred
    or not) or a PCA whitening, all fitted on the real database; exact search. Writes reductions.md."""
    from registry.evaluation import recall_at_n

    lines = ["| model | reduction | dims | R@1 | R@5 |", "|---|---|---:|---:|---:|"]
    for model in MODELS:
        q, pos, db, _, _ = real_descriptors(work, model, None)
        full = recall_at_n(q, db, pos, (1, 5))["recall"]
        lines.append(f"| {model} | none | {db.shape[1]} | {full[1]:.1f} | {full[5]:.1f} |")
        q64, db64 = q.astype(np.float64), db.astype(np.float64)
        mu = db64.mean(0)
        _, sv, vt = np.linalg.svd(db64 - mu, full_matrices=False)  # PCA of the real database
        for d in dims:
            proj = vt[:d].T
            variants = (("PCA", lambda x: (x - mu) @ proj), ("PCA, uncentred", lambda x: x @ proj),
                        ("PCA whitening (as PCAWhitening)", lambda x: (x - mu) @ proj / sv[:d]))
            for name, f in variants:
                r = recall_at_n(f(q64).astype(np.float32), f(db64).astype(np.float32), pos, (1, 5))["recall"]
                lines.append(f"| {model} | {name} | {d} | {r[1]:.1f} | {r[5]:.1f} |")
                print(lines[-1], flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "reductions.md").write_text("\n".join(lines) + "\n")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("phase", choices=("extract", "measure", "report", "reductions"))
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "map_scale",
                   help="descriptor stores and distractor files (large; default /tmp/map_scale)")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "map_scale",
                   help="table (JSON, Markdown) and plot (default benchmarks/map_scale)")
    p.add_argument("--series", nargs="*", default=(), help="measure only these series (default all)")
    p.add_argument("--models", nargs="*", default=MODELS, help="extract only these models (default both)")
    p.add_argument("--sizes", type=int, nargs="*", default=SIZES, help="database sizes (default 10^3 .. 10^6)")
    a = p.parse_args(argv)
    a.work.mkdir(parents=True, exist_ok=True)
    if a.phase == "extract":
        extract(a.work, a.models)
    elif a.phase == "measure":
        measure(a.work, a.out, a.series, a.sizes)
    elif a.phase == "reductions":
        reductions(a.work, a.out)
    else:
        write_report(json.loads((a.out / "map_scale.json").read_text()), a.out)


if __name__ == "__main__":
    main()
