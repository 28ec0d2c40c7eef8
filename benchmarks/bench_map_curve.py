"""Indexes that keep their recall as the map grows (RESULTS.md section 10): IVF-PQ searched with L2 on unit vectors,
with and without OPQ, re-ranked from float16 vectors on disk or in RAM, against exact search and HNSW.

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
import resource
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
# (series, model, PCA dim of the series or None, sizes)
SERIES = (("ClusVPR whitened-256", "clusvpr_vgg16", 256, (10**5, 10**6)),
          ("ClusVPR 8192", "clusvpr_vgg16", None, (10**5,)))


def _configs(dim: int, n: int) -> List[Dict]:
    """Index builds for one series and size: (name, IndexSpec options, search points [(nprobe/ef, refine)])."""
    nlist = scale._nlist(n)
    probes = [(p, r) for p in (16, 64, 256) for r in (None, 4, 16)]
    out = [dict(name="flat", spec=dict(kind="flat"), points=[(None, None)])]
    hnsw = [dict(name=f"HNSW efC{c}", spec=dict(kind="hnsw", ef_construction=c), points=[(e, None) for e in
                                                                                          (64, 256, 1024)])
            for c in ((40, 200) if n <= 10**5 else (40,))]
    if dim <= 1024 and n > 10**5:  # 10^6: the target row only (time); OPQ, m=64 and HNSW as measured at 10^5
        out.append(dict(name="IVF-PQ32 L2, refine from disk", spec=dict(kind="ivfpq", nlist=nlist, m=32, refine=16),
                        points=probes + [(64, 32), (128, 16), (128, 32)]))
    elif dim <= 1024:
        out += [dict(name="IVF-PQ32 inner product (section 9)", legacy_ip=True, m=32, nlist=nlist,
                     points=[(p, None) for p in (16, 64, 256)]),
                dict(name="IVF-PQ32 L2, refine from disk", spec=dict(kind="ivfpq", nlist=nlist, m=32, refine=16),
                     points=probes),
                dict(name="IVF-PQ64 L2, refine from disk", spec=dict(kind="ivfpq", nlist=nlist, m=64, refine=16),
                     points=probes),
                dict(name="OPQ + IVF-PQ32 L2, refine from disk",
                     spec=dict(kind="ivfpq", nlist=nlist, m=32, opq=True, refine=16), points=probes)]
        if n <= 10**5:
            out.append(dict(name="IVF-PQ32 L2, refine from RAM fp16",
                            spec=dict(kind="ivfpq", nlist=nlist, m=32, refine=16, refine_from="fp16"),
                            points=[(64, 4), (64, 16)]))
        out += hnsw  # last: the slowest builds, reference rows (section 9 has HNSW with inner product)
    else:
        out += [dict(name="IVF-PQ64 inner product (section 9)", legacy_ip=True, m=64, nlist=nlist,
                     points=[(p, None) for p in (16, 64, 256)]),
                dict(name="IVF-PQ64 L2, refine from disk", spec=dict(kind="ivfpq", nlist=nlist, m=64, refine=16),
                     points=probes),
                dict(name="PCA256 + IVF-PQ32 L2, refine from disk (8192-d)",
                     spec=dict(kind="ivfpq", pca_dim=256, nlist=nlist, m=32, refine=16), points=probes)]
    return out


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
    ids = np.sort(np.random.default_rng(1).choice(n, 2000, replace=False))
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


def measure_config(series: str, cfg: Dict, n: int, q: np.ndarray, pos, db: np.ndarray, work: Path,
                   done: set) -> List[Dict]:
    from registry.evaluation import IndexSpec, PlaceIndex, recall_from_predictions
    from registry.evaluation.index import index_bytes

    dim = db.shape[1]
    max_train = scale.MAX_TRAIN[dim < 4096]
    start = time.perf_counter()
    if cfg.get("legacy_ip"):
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
    diag = _diagnose(index if kind == "legacy" else index.faiss_index, db, n) if kind in ("legacy", "ivfpq") else {}
    rows = []
    for value, refine in cfg["points"]:
        label = ", ".join(x for x in ((f"{'ef_search' if kind == 'hnsw' else 'nprobe'}={value}" if value else ""),
                                      (f"refine={refine}" if refine else "")) if x)
        if label in done:
            continue
        search = _search_fn(index, kind, value, refine)
        pred = search(q, K)
        lat = []
        for i in np.linspace(0, len(q) - 1, LATENCY_QUERIES).round().astype(int):
            t = time.perf_counter()
            search(q[i : i + 1], K)
            lat.append(1000 * (time.perf_counter() - t))
        recall = recall_from_predictions(pred, pos, (1, 5, 10))["recall"]
        rows.append({"series": series, "dim": dim, "n": n, "index": cfg["name"], "factory": factory, "search": label,
                     "ram_bytes": ram, "ram_per_image": ram / n, "disk_per_image": disk / n, "build_s": build_s,
                     "latency_ms_median": statistics.median(lat), "latency_ms_p99": float(np.percentile(lat, 99)),
                     "recall_1": recall[1], "recall_5": recall[5], "recall_10": recall[10],
                     "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **diag})
        print(f"{series:20s} n={n:>8,} {cfg['name']:48s} {label:22s} RAM {ram / n:8.1f} B/img  build {build_s:6.1f} s"
              f"  {rows[-1]['latency_ms_median']:7.2f} ms  R@1 {recall[1]:5.1f} R@5 {recall[5]:5.1f}", flush=True)
    return rows


def curve(work: Path, out: Path, sizes: Sequence[int] = (), series: Sequence[str] = ()) -> None:
    import faiss

    faiss.omp_set_num_threads(1)
    table = out / "map_curve.json"
    rows: List[Dict] = json.loads(table.read_text()) if table.exists() else []
    for label, model, pca_dim, ns in SERIES:
        if series and label not in series:
            continue
        q, pos, real, n_pos, reduce = scale.real_descriptors(work, model, pca_dim)
        db = scale.database_file(work, label, real, n_pos, max(ns), reduce)
        q = q if reduce is None else reduce(q)
        for n in ns:
            if sizes and n not in sizes:
                continue
            for cfg in _configs(db.shape[1], n):
                done = {r["search"] for r in rows if (r["series"], r["n"], r["index"]) == (label, n, cfg["name"])}
                if len(done) == len(cfg["points"]):
                    continue
                rows += measure_config(label, cfg, n, q, pos, db, work, done)
                table.write_text(json.dumps(rows, indent=1))
    write_report(rows, out)


def _exact(row: Dict, rows: Sequence[Dict]) -> Optional[Dict]:
    return next((r for r in rows if (r["series"], r["n"], r["index"]) == (row["series"], row["n"], "flat")), None)


def write_report(rows: Sequence[Dict], out: Path) -> None:
    lines = ["| series | images | index | faiss | search | RAM B/image | disk B/image | build s | query ms median | "
             "p99 | R@1 | R@5 | R@10 | loss R@1 / R@5 / R@10 |", "|---|---:|---|---|---|---:|---:|---:|---:|---:|---:|"
             "---:|---:|---|"]
    for r in rows:
        ex = _exact(r, rows)
        loss = "(exact)" if r["index"] == "flat" else (
            "-" if ex is None else " / ".join(f"{ex[f'recall_{k}'] - r[f'recall_{k}']:+.1f}" for k in (1, 5, 10)))
        lines.append(f"| {r['series']} | {r['n']:,} | {r['index']} | {r['factory']} | {r['search']} | "
                     f"{r['ram_per_image']:,.0f} | {r['disk_per_image']:,.0f} | {r['build_s']:.1f} | "
                     f"{r['latency_ms_median']:.2f} | {r['latency_ms_p99']:.2f} | {r['recall_1']:.1f} | "
                     f"{r['recall_5']:.1f} | {r['recall_10']:.1f} | {loss} |")
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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(r["series"], r["n"]) for r in rows}, key=lambda s: (s[0], s[1]))
    fig, axes = plt.subplots(2, len(panels), figsize=(5.2 * len(panels), 9), squeeze=False)
    for col, (series, n) in enumerate(panels):
        sub = [r for r in rows if (r["series"], r["n"]) == (series, n)]
        exact = _exact(sub[0], rows)
        for i, name in enumerate(dict.fromkeys(r["index"] for r in sub)):
            pts = [r for r in sub if r["index"] == name]
            style = dict(color=f"C{i % 10}", marker="os^vD<>p"[i % 8], ls="", label=name)
            axes[0, col].plot([r["latency_ms_median"] for r in pts], [r["recall_1"] for r in pts], **style)
            axes[1, col].plot([r["ram_per_image"] for r in pts], [r["recall_1"] for r in pts], **style)
        for row, (ax, xl) in enumerate(((axes[0, col], "query ms, median (1 thread, batch 1)"),
                                        (axes[1, col], "RAM bytes per image (index)"))):
            if exact is not None:
                ax.axhline(exact["recall_1"], color="k", lw=0.8)
                ax.axhline(exact["recall_1"] - 0.5, color="k", lw=0.5, ls=":")
            if row == 0:
                ax.axvline(10, color="r", lw=0.5, ls=":")
            else:
                ax.axvline(200, color="r", lw=0.5, ls=":")
            ax.set_xscale("log")
            ax.set_xlabel(xl)
            ax.set_ylabel("Recall@1 (%)")
            ax.set_title(f"{series}, {n:,} images (line: exact; dotted: exact - 0.5)", fontsize=9)
            ax.grid(True, which="both", alpha=0.3)
        axes[0, col].legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
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
    a = p.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    if a.phase == "reads":
        reads(a.work, a.out)
    elif a.phase == "anomaly":
        anomaly(a.work, a.out)
    elif a.phase == "curve":
        curve(a.work, a.out, a.sizes, a.series)
    else:
        write_report(json.loads((a.out / "map_curve.json").read_text()), a.out)


if __name__ == "__main__":
    main()
