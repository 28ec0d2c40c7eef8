"""Indexes that keep their recall as the map grows (benchmarks/results/map-curve.md): IVF-PQ searched with L2 on
unit vectors, with and without OPQ, re-ranked from float16 vectors on disk or in RAM, against exact search and HNSW.

  python benchmarks/bench_map_scale.py extract --work W    # real descriptors (section 9's, cached once)
  python benchmarks/bench_map_curve.py reads --work W      # random row reads: Lance take against a float16 memmap
  python benchmarks/bench_map_curve.py curve --work W      # the table (JSON + Markdown) and the plot
  python benchmarks/bench_map_curve.py anomaly --work W    # why section 9's IVF-PQ lost recall with more probes
  python benchmarks/bench_map_curve.py report              # re-render both from map_curve.json

Same queries, positives and distractor construction as section 9 (bench_map_scale.real_descriptors and
database_file: real Nordland + Corridor descriptors of the released ClusVPR, then distractors mixed from the real
other places), so the two sections compare row for row. One thread (OMP_NUM_THREADS=1). Rows already in
map_curve.json are kept and skipped, so an interrupted run resumes.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

_spec = importlib.util.spec_from_file_location("bench_map_scale", Path(__file__).with_name("bench_map_scale.py"))
scale = importlib.util.module_from_spec(_spec)  # section 9's data construction, reused as is
_spec.loader.exec_module(scale)

OUT = Path(__file__).resolve().parent / "map_scale"
NLIST_CAP = 1024  # as section 9 (4 sqrt(N) capped), so the rows compare
LATENCY_QUERIES = 100
K = 10
PROJECTED = ", projected distractors"  # series whose distractors are drawn in the whitened space
# (series, model, PCA dim of the series or None, sizes, generator: 'full' (section 9's) or 'projected')
SERIES = (("ClusVPR whitened-256", "clusvpr_vgg16", 256, (10**3, 10**4, 10**5, 10**6), "full"),
          ("ClusVPR 8192", "clusvpr_vgg16", None, (10**5,), "full"),
          ("ClusVPR whitened-256" + PROJECTED, "clusvpr_vgg16", 256, (10**5, 10**6, 10**7), "projected"),
          ("NetVLAD whitened-256" + PROJECTED, "netvlad_vgg16", 256, (10**5, 10**6), "projected"),
          ("NetVLAD 32768", "netvlad_vgg16", None, (10**4,), "full"))
REFINE_POINTS = [(p, r) for p in (16, 64, 256) for r in (None, 4, 16)]
STREAM_EXACT = 10**7  # from this size exact search streams the map from disk (recall only; no flat index held)


def _ivfpq(name: str, nlist: int, m: int, points, max_train=None, build_threads=1, **spec) -> Dict:
    return dict(name=name, spec=dict(kind="ivfpq", nlist=nlist, m=m, refine=16, **spec), points=points,
                max_train=max_train, build_threads=build_threads)


def _configs(series: str, dim: int, n: int) -> List[Dict]:
    """Index builds for one series and size: (name, IndexSpec options, search points [(nprobe/ef, refine)])."""
    nlist = scale._nlist(n)
    flat = dict(name="flat", spec=dict(kind="flat"), points=[(None, None)])
    hnsw = {c: dict(name=f"HNSW efC{c}", spec=dict(kind="hnsw", ef_construction=c),
                    points=[(e, None) for e in (64, 256, 1024)]) for c in (40, 200)}
    target = "IVF-PQ32 L2, refine from disk"
    if dim > 1024:
        legacy_m = 64
        out = [flat, dict(name=f"IVF-PQ{legacy_m} inner product (section 9)", legacy_ip=True, m=legacy_m, nlist=nlist,
                          points=[(p, None) for p in (16, 64, 256)]),
               _ivfpq("IVF-PQ64 L2, refine from disk", nlist, 64, REFINE_POINTS)]
        if dim <= 8192:  # faiss's PCAMatrix trains a d x d eigenvector matrix: 4.3 GB (and hours) at 32768-d
            out.append(_ivfpq(f"PCA256 + IVF-PQ32 L2, refine from disk ({dim}-d)", nlist, 32,
                              REFINE_POINTS + [(128, 16)], pca_dim=256,
                              build_threads=2))  # faiss's PCA of 10^4 x 8192 took 22 min on one thread
        return out
    if n >= STREAM_EXACT:  # 10^7: the target index with the measured nlist and with 4x the lists (the knob)
        return [dict(name="flat", streamed=True, points=[(None, None)]),
                _ivfpq(target, nlist, 32, [(64, 16), (128, 16), (256, 16), (128, 32)]),
                _ivfpq("IVF4096-PQ32 L2, refine from disk", 4096, 32, [(64, 16), (128, 16), (256, 16), (512, 16)],
                       max_train=4096 * 39, build_threads=2)]
    if PROJECTED in series and n == 10**5:  # ClusVPR: the distribution check (exact search on both generators' maps)
        return [flat] + ([] if series.startswith("ClusVPR") else [_ivfpq(target, nlist, 32, REFINE_POINTS)])
    if n >= 10**6:
        out = [flat, _ivfpq(target, nlist, 32, REFINE_POINTS + [(64, 32), (128, 16), (128, 32)])]
        if series.startswith("ClusVPR"):
            out += [_ivfpq("IVF-PQ64 L2, refine from disk", nlist, 64, [(64, 4), (64, 16), (128, 4), (128, 16)]),
                    _ivfpq("OPQ + IVF-PQ32 L2, refine from disk", nlist, 32, [(64, 16), (128, 16)], opq=True),
                    _ivfpq("IVF-PQ32 L2, refine from RAM fp16", nlist, 32, [(64, 16), (128, 16)],
                           refine_from="fp16"),
                    _ivfpq("IVF-PQ32 L2, refine from RAM sq8", nlist, 32, [(64, 16), (128, 16)], refine_from="sq8"),
                    hnsw[40], hnsw[200]]
        return out
    out = [flat, dict(name="IVF-PQ32 inner product (section 9)", legacy_ip=True, m=32, nlist=nlist,
                      points=[(p, None) for p in (16, 64, 256)]),
           _ivfpq(target, nlist, 32, REFINE_POINTS)]
    if n >= 10**5:
        out += [_ivfpq("IVF-PQ64 L2, refine from disk", nlist, 64, REFINE_POINTS),
                _ivfpq("OPQ + IVF-PQ32 L2, refine from disk", nlist, 32, REFINE_POINTS, opq=True),
                dict(name="IVF-PQ32 L2, refine from RAM fp16",
                     spec=dict(kind="ivfpq", nlist=nlist, m=32, refine=16, refine_from="fp16"),
                     points=[(64, 4), (64, 16)])]
    return out + [hnsw[40], hnsw[200]]  # last: the slowest builds, reference rows


def _legacy_ip(db: np.ndarray, n: int, nlist: int, m: int, max_train: int):
    """Section 9's IVF-PQ exactly: inner-product metric, residual PQ, trained on the same fixed sample."""
    import faiss

    from registry.evaluation.index import normalise

    index = faiss.index_factory(db.shape[1], f"IVF{nlist},PQ{m}x8", faiss.METRIC_INNER_PRODUCT)
    faiss.downcast_index(faiss.extract_index_ivf(index)).do_polysemous_training = False
    pick = np.sort(np.random.default_rng(0).choice(n, min(n, max_train), replace=False))
    index.train(normalise(db[pick]))
    for s in range(0, n, 16384):
        index.add(normalise(db[s : min(s + 16384, n)]))
    return index


def _diagnose(index, db: np.ndarray, n: int) -> Dict:
    """Why IVF-PQ recall can fall as nprobe grows: list balance and the PQ error of the stored codes."""
    import faiss

    from registry.evaluation.index import normalise

    ivf = faiss.extract_index_ivf(index)
    sizes = np.array([ivf.invlists.list_size(i) for i in range(ivf.nlist)])
    ivf.make_direct_map()
    ids = np.sort(np.random.default_rng(1).choice(n, min(n, 2000), replace=False))
    x = normalise(db[ids])
    err = np.linalg.norm(x - index.reconstruct_batch(ids), axis=1)
    centroids = ivf.quantizer.reconstruct_n(0, ivf.nlist)
    return {"largest_list_share": float(sizes.max() / n), "imbalance_factor": float(ivf.invlists.imbalance_factor()),
            "empty_lists": int((sizes == 0).sum()), "pq_error_median": float(np.median(err)),
            "centroid_norm_median": float(np.median(np.linalg.norm(centroids, axis=1))),
            "centroid_norm_max": float(np.linalg.norm(centroids, axis=1).max())}


def _search_fn(index, kind: str, value, refine):
    """A search(q, k) -> ids closure at one operating point (refine None: the index's own ranking)."""
    if kind == "legacy":
        import faiss

        faiss.extract_index_ivf(index).nprobe = value
        return lambda q, k: index.search(q, k)[1]
    if value is not None:
        index.set_search_params(**({"nprobe": value} if kind == "ivfpq" else {"ef_search": value}))
    if refine is None and index.spec.refine and index.spec.refine_from == "disk":
        from registry.evaluation.index import normalise

        return lambda q, k: index.faiss_index.search(normalise(q), k)[1]  # the shortlist's own order
    if refine is not None:
        index.set_search_params(refine=refine)
    return lambda q, k: index.search(q, k)[1]


def exact_streamed(q: np.ndarray, db, n: int, k: int, chunk: int = 1 << 18) -> np.ndarray:
    """Exact top-k ids of unit queries over the first n rows of `db`, read in chunks (one pass, nothing held)."""
    import faiss
    from tqdm import tqdm

    from registry.evaluation.index import normalise

    qn = normalise(q)
    best_s = np.full((len(q), k), -np.inf, dtype=np.float32)
    best_i = np.full((len(q), k), -1, dtype=np.int64)
    for s in tqdm(range(0, n, chunk), desc=f"exact search over {n:,} rows"):
        sims, ids = faiss.knn(qn, normalise(db[s : min(s + chunk, n)]), k, metric=faiss.METRIC_INNER_PRODUCT)
        all_s, all_i = np.concatenate([best_s, sims], 1), np.concatenate([best_i, ids + s], 1)
        top = np.argsort(-all_s, axis=1, kind="stable")[:, :k]
        best_s, best_i = np.take_along_axis(all_s, top, 1), np.take_along_axis(all_i, top, 1)
    return best_i


def measure_config(series: str, cfg: Dict, n: int, q: np.ndarray, pos, db, work: Path, done: set) -> List[Dict]:
    """Build one index of the first n rows and measure it at each of its search points not in `done`. Peak RSS is
    this index's own: VmHWM is reset before the build (the row records it and the RSS at that moment)."""
    import faiss

    from registry.evaluation import IndexSpec, PlaceIndex, recall_from_predictions
    from registry.evaluation.index import index_bytes

    dim = db.shape[1]
    max_train = cfg.get("max_train") or scale.MAX_TRAIN[dim < 4096]
    rss_start = scale.rss_reset()
    faiss.omp_set_num_threads(cfg.get("build_threads", 1))
    start = time.perf_counter()
    if cfg.get("streamed"):
        index, kind, factory, ram, disk = None, "streamed", "exact scan of the map file (no index held)", np.nan, 0
        pred_exact = exact_streamed(q, db, n, K)
    elif cfg.get("legacy_ip"):
        index, kind = _legacy_ip(db, n, cfg["nlist"], cfg["m"], max_train), "legacy"
        factory, ram, disk = f"IVF{cfg['nlist']},PQ{cfg['m']}x8 (inner product)", index_bytes(index), 0
    else:
        index = PlaceIndex(dim, IndexSpec(**cfg["spec"]))
        if index.spec.needs_training or index.spec.kind == "ivfpq":
            index.train(db[:n], max_train=max_train)
        index.add(db[:n])
        kind, factory = index.spec.kind, index.spec.factory(dim)
        ram, disk = index.memory_bytes(), index.disk_bytes()
    build_s = time.perf_counter() - start
    faiss.omp_set_num_threads(1)
    diag = {}
    if kind in ("legacy", "ivfpq") and n <= 10**6:
        diag = _diagnose(index if kind == "legacy" else index.faiss_index, db, n)
    rows = []
    for value, refine in cfg["points"]:
        label = ", ".join(x for x in ((f"{'ef_search' if kind == 'hnsw' else 'nprobe'}={value}" if value else ""),
                                      (f"refine={refine}" if refine else "")) if x)
        if label in done:
            continue
        lat = []
        if kind == "streamed":
            pred = pred_exact
        else:
            search = _search_fn(index, kind, value, refine)
            pred = search(q, K)
            for i in np.linspace(0, len(q) - 1, LATENCY_QUERIES).round().astype(int):
                t = time.perf_counter()
                search(q[i : i + 1], K)
                lat.append(1000 * (time.perf_counter() - t))
        recall = recall_from_predictions(pred, pos, (1, 5, 10))["recall"]
        peak = scale.rss_peak()
        rows.append({"series": series, "dim": dim, "n": n, "index": cfg["name"], "factory": factory, "search": label,
                     "ram_bytes": ram, "ram_per_image": ram / n, "disk_per_image": disk / n, "build_s": build_s,
                     "build_threads": cfg.get("build_threads", 1),
                     "latency_ms_median": statistics.median(lat) if lat else np.nan,
                     "latency_ms_p99": float(np.percentile(lat, 99)) if lat else np.nan,
                     "recall_1": recall[1], "recall_5": recall[5], "recall_10": recall[10],
                     "row_peak_rss_mb": peak / 2**20, "row_rss_start_mb": rss_start / 2**20,
                     # now (not peak): anonymous memory and mapped file pages (a disk refine's vectors.f16)
                     "rss_anon_mb": scale._status_bytes("RssAnon") / 2**20,
                     "rss_file_mb": scale._status_bytes("RssFile") / 2**20, **diag})
        print(f"{series:20s} n={n:>8,} {cfg['name']:48s} {label:22s} RAM {ram / n:8.1f} B/img  build {build_s:6.1f} s"
              f"  {rows[-1]['latency_ms_median']:7.2f} ms  R@1 {recall[1]:5.1f} R@5 {recall[5]:5.1f}  peak RSS "
              f"{peak / 2**20:,.0f} MB (+{(peak - rss_start) / 2**20:,.0f})", flush=True)
    del index
    return rows


def curve(work: Path, out: Path, sizes: Sequence[int] = (), series: Sequence[str] = (),
          indexes: Sequence[str] = ()) -> None:
    import faiss

    faiss.omp_set_num_threads(1)
    table = out / "map_curve.json"
    rows: List[Dict] = json.loads(table.read_text()) if table.exists() else []
    for label, model, pca_dim, s_all, generator in SERIES:
        if series and label not in series:
            continue
        ns = [n for n in s_all if not sizes or n in sizes]
        if not ns:
            continue
        q, pos, real, n_pos, reduce = scale.real_descriptors(work, model, pca_dim)
        if generator == "projected":  # one file of the series' largest size; every smaller map is a prefix
            n_file = max(s_all)
            path = scale.projected_database_file(work, label, real, n_pos, n_file, reduce.whitening)
        else:  # section 9's generator, 26 min per 10^6 reduced rows: the file of max(requested, 10^5) rows
            n_file = max(max(ns), min(10**5, max(s_all)))
            path = Path(scale.database_file(work, label, real, n_pos, n_file, reduce).filename)
        db = scale.RowFile(path)
        q = q if reduce is None else reduce(q)
        for n in ns:
            for cfg in _configs(label, db.shape[1], n):
                if indexes and cfg["name"] not in indexes:
                    continue
                done = {r["search"] for r in rows if (r["series"], r["n"], r["index"]) == (label, n, cfg["name"])}
                if len(done) == len(cfg["points"]):
                    continue
                rows += measure_config(label, cfg, n, q, pos, db, work, done)
                table.write_text(json.dumps(rows, indent=1))
    write_report(rows, out)


def _exact(row: Dict, rows: Sequence[Dict]) -> Optional[Dict]:
    return next((r for r in rows if (r["series"], r["n"], r["index"]) == (row["series"], row["n"], "flat")), None)


def _num(x, fmt: str) -> str:
    return "-" if x is None or (isinstance(x, float) and np.isnan(x)) else format(x, fmt)


def write_report(rows: Sequence[Dict], out: Path) -> None:
    lines = ["| series | images | index | faiss | search | RAM B/image | disk B/image | build s | query ms median | "
             "p99 | R@1 | R@5 | R@10 | loss R@1 / R@5 / R@10 | peak RSS MB (+ over the row's start) |",
             "|---|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for r in rows:
        ex = _exact(r, rows)
        loss = "(exact)" if r["index"] == "flat" else (
            "-" if ex is None else " / ".join(f"{ex[f'recall_{k}'] - r[f'recall_{k}']:+.1f}" for k in (1, 5, 10)))
        if "row_peak_rss_mb" in r:
            rss = f"{r['row_peak_rss_mb']:,.0f} (+{r['row_peak_rss_mb'] - r['row_rss_start_mb']:,.0f})"
            if "rss_anon_mb" in r:
                rss += f"; after: anon {r['rss_anon_mb']:,.0f}, file {r['rss_file_mb']:,.0f}"
        else:
            rss = f"process {r['process_peak_rss_mb']:,.0f}" if "process_peak_rss_mb" in r else "-"
        threads = r.get("build_threads", 1)
        build = _num(r["build_s"], ".1f") + (f" ({threads} threads)" if threads > 1 else "")
        lines.append(f"| {r['series']} | {r['n']:,} | {r['index']} | {r['factory']} | {r['search']} | "
                     f"{_num(r['ram_per_image'], ',.0f')} | {r['disk_per_image']:,.0f} | {build} | "
                     f"{_num(r['latency_ms_median'], '.2f')} | {_num(r['latency_ms_p99'], '.2f')} | "
                     f"{r['recall_1']:.1f} | {r['recall_5']:.1f} | {r['recall_10']:.1f} | {loss} | {rss} |")
    diag = [r for r in rows if "imbalance_factor" in r]
    lines += ["", "| series | images | index | largest list (share of the map) | imbalance factor | empty lists | "
              "median PQ error of a stored vector | centroid norm median / max |",
              "|---|---:|---|---:|---:|---:|---:|---|"]
    for r in {(r["series"], r["n"], r["index"]): r for r in diag}.values():
        lines.append(f"| {r['series']} | {r['n']:,} | {r['index']} | {r['largest_list_share']:.3f} | "
                     f"{r['imbalance_factor']:.1f} | {r['empty_lists']} | {r['pq_error_median']:.3f} | "
                     f"{r['centroid_norm_median']:.2f} / {r['centroid_norm_max']:.2f} |")
    (out / "map_curve.md").write_text("\n".join(lines) + "\n")
    _plot(rows, out / "map_curve.png")


def _plot(rows: Sequence[Dict], path: Path) -> None:
    """One row of panels per series: Recall@1 lost against exact search (same map) against batch-1 latency and
    against RAM per image; colour: index family, marker: map size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = list(dict.fromkeys(r["series"] for r in rows))
    families = list(dict.fromkeys(r["index"] for r in rows if r["index"] != "flat"))
    sizes = sorted({r["n"] for r in rows})
    markers = dict(zip(sizes, "v^os*DP"))
    fig, axes = plt.subplots(len(series), 2, figsize=(15, 4.2 * len(series)), squeeze=False)
    for row, name in enumerate(series):
        sub = [r for r in rows if r["series"] == name and r["index"] != "flat"]
        for r in sub:
            ex = _exact(r, rows)
            if ex is None:
                continue
            loss = ex["recall_1"] - r["recall_1"]
            style = dict(color=f"C{families.index(r['index']) % 10}", marker=markers[r["n"]], ls="", ms=5)
            axes[row, 0].plot(r["latency_ms_median"], loss, **style)
            axes[row, 1].plot(r["ram_per_image"], loss, **style)
        for col, (xl, limit) in enumerate((("query ms, median (1 thread, batch 1)", 10),
                                           ("RAM bytes per image (index in memory)", 200))):
            ax = axes[row, col]
            ax.axhline(0, color="k", lw=0.8)
            ax.axhline(0.5, color="k", lw=0.5, ls=":")
            ax.axvline(limit, color="r", lw=0.5, ls=":")
            ax.set_xscale("log")
            ax.set_ylim(-8, 26)  # below 0: the approximate ranking put more positives first than exact search
            ax.set_xlabel(xl)
            ax.set_ylabel("R@1 lost against exact (points)")
            ax.set_title(f"{name} (dotted: the 0.5-point target, red: {limit} {'ms' if col == 0 else 'B'})", fontsize=9)
            ax.grid(True, which="both", alpha=0.3)
        names = list(dict.fromkeys(r["index"] for r in sub))
        handles = [plt.Line2D([], [], color=f"C{families.index(f) % 10}", marker="o", ls="", label=f) for f in names]
        handles += [plt.Line2D([], [], color="grey", marker=markers[n], ls="", label=f"{n:,} images")
                    for n in sorted({r["n"] for r in sub})]
        axes[row, 1].legend(handles=handles, fontsize=6, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def reads(work: Path, out: Path, n: int = 100_000, dim: int = 256, rows_per_query: int = 160,
          repeats: int = 300) -> None:
    """Median / p99 ms to read `rows_per_query` random rows (sorted ids, one query's shortlist) through Lance's
    take and from a float16 memmap, interleaved, both files in the page cache (read once before timing)."""
    import lance
    import pyarrow as pa

    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    uri = work / f"reads_{n}_{dim}.lance"
    if not uri.exists():
        vec = pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), dim)
        lance.write_dataset(pa.table({"row": np.arange(n), "descriptor": vec}), uri, max_rows_per_file=1 << 20)
    mm_path = work / f"reads_{n}_{dim}.f16"
    x.astype(np.float16).tofile(mm_path)
    ds = lance.dataset(str(uri))
    mm = np.memmap(mm_path, dtype=np.float16, mode="r", shape=(n, dim))
    ds.to_table(columns=["descriptor"])
    np.asarray(mm).sum()
    times = {"lance take (float32 rows)": [], "numpy memmap (float16 rows)": []}
    for _ in range(repeats):
        ids = np.sort(rng.choice(n, rows_per_query, replace=False))
        t = time.perf_counter()
        got = ds.take(ids, columns=["descriptor"]).column("descriptor")
        got.combine_chunks().flatten().to_numpy().reshape(-1, dim)
        times["lance take (float32 rows)"].append(1000 * (time.perf_counter() - t))
        t = time.perf_counter()
        np.asarray(mm[ids], dtype=np.float32)
        times["numpy memmap (float16 rows)"].append(1000 * (time.perf_counter() - t))
    lines = ["| reader | rows per query | map | median ms | p99 ms |", "|---|---:|---|---:|---:|"]
    for name, t in times.items():
        lines.append(f"| {name} | {rows_per_query} | {n:,} x {dim} | {statistics.median(t):.3f} | "
                     f"{np.percentile(t, 99):.3f} |")
    print("\n".join(lines))
    (out / "row_reads.md").write_text("\n".join(lines) + "\n")


def anomaly(work: Path, out: Path, n: int = 10_000) -> None:
    """Section 9's IVF-PQ (inner product) on the 8192-d ClusVPR map of n images: Recall@1 at nprobe 16/64/256 as
    built, the norms of its stored reconstructions x^ = c + r^ (the unit descriptors come back with other norms), the
    norm of the top-1 it returns, and Recall@1 when the same shortlist of 100 is ranked by <q, x^> / norm(x^) (the norm
    error removed) and by the L2 index that replaces it."""
    import faiss

    from registry.evaluation import IndexSpec, PlaceIndex, recall_from_predictions
    from registry.evaluation.index import normalise

    faiss.omp_set_num_threads(1)
    q, pos, real, n_pos, _ = scale.real_descriptors(work, "clusvpr_vgg16", None)
    db = scale.database_file(work, "ClusVPR 8192", real, n_pos, 10**5)
    nlist, m = scale._nlist(n), 64
    ip = _legacy_ip(db, n, nlist, m, scale.MAX_TRAIN[False])
    ivf = faiss.extract_index_ivf(ip)
    ivf.make_direct_map()
    norms = np.linalg.norm(ip.reconstruct_n(0, n), axis=1)
    l2 = PlaceIndex(db.shape[1], IndexSpec("ivfpq", nlist=nlist, m=m))
    l2.train(db[:n], max_train=scale.MAX_TRAIN[False])
    l2.add(db[:n])
    qn = normalise(q)
    lines = [f"ClusVPR 8192-d, {n:,} images, IVF{nlist},PQ{m}x8. Norms of the stored reconstructions of unit vectors: "
             f"median {np.median(norms):.3f}, 5-95% {np.percentile(norms, 5):.3f}-{np.percentile(norms, 95):.3f}.",
             "", "| nprobe | R@1 inner product (section 9) | median norm of its top-1 | R@1 same shortlist by "
             "<q, x^> / norm(x^) | R@1 L2 (this section) |", "|---:|---:|---:|---:|---:|"]
    for nprobe in (16, 64, 256):
        ivf.nprobe = nprobe
        sims, ids = ip.search(qn, 100)
        corrected = np.take_along_axis(ids, np.argsort(-(sims / norms[ids]), axis=1), 1)
        l2.set_search_params(nprobe=nprobe)
        r = [recall_from_predictions(p[:, :5], pos, (1,))["recall"][1] for p in (ids, corrected, l2.search(q, 5)[1])]
        lines.append(f"| {nprobe} | {r[0]:.1f} | {np.median(norms[ids[:, 0]]):.3f} | {r[1]:.1f} | {r[2]:.1f} |")
        print(lines[-1], flush=True)
    (out / "nprobe_anomaly.md").write_text("\n".join(lines) + "\n")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("phase", choices=("reads", "curve", "anomaly", "report"))
    p.add_argument("--work", type=Path, default=Path("/tmp/map_scale"), help="descriptors and distractor files")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--sizes", type=int, nargs="*", default=())
    p.add_argument("--series", nargs="*", default=())
    p.add_argument("--indexes", nargs="*", default=(), help="only these index names (default all of the size)")
    a = p.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    if a.phase == "reads":
        reads(a.work, a.out)
    elif a.phase == "anomaly":
        anomaly(a.work, a.out)
    elif a.phase == "curve":
        curve(a.work, a.out, a.sizes, a.series, a.indexes)
    else:
        write_report(json.loads((a.out / "map_curve.json").read_text()), a.out)


if __name__ == "__main__":
    main()
