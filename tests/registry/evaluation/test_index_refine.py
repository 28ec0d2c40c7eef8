"""Approximate indexes that search correctly, against brute force on planted neighbours: L2 on unit vectors ranks
like inner product, and re-ranking a k * refine shortlist (from disk, float16 or 8-bit memory) restores the exact
top k that product quantisation alone scrambles."""
from __future__ import annotations

import numpy as np
import pytest

from registry.evaluation import IndexSpec, PlaceIndex
from registry.evaluation.index import IndexFileError, choose_index, normalise, parse_bytes

faiss = pytest.importorskip("faiss")
K = 10


def planted(n_db: int = 6000, n_q: int = 40, dim: int = 64, seed: int = 0):
    """Random unit database; each query gets K planted neighbours at angles 0.2, 0.28, ... rad (cosine gaps >= 0.015,
    far above float16 / 8-bit rounding), every other row near-orthogonal to it. Returns q, db, exact top K."""
    rng = np.random.default_rng(seed)
    db = normalise(rng.standard_normal((n_db, dim))).astype(np.float64)
    q = normalise(rng.standard_normal((n_q, dim))).astype(np.float64)
    for i in range(n_q):
        for j in range(K):
            noise = rng.standard_normal(dim)
            noise -= (noise @ q[i]) * q[i]
            angle = 0.2 + 0.08 * j
            db[j * n_q + i] = np.cos(angle) * q[i] + np.sin(angle) * noise / np.linalg.norm(noise)
    exact = np.argsort(-(q @ db.T), axis=1, kind="stable")[:, :K]  # float64 brute force
    planted_ids = np.arange(K)[None, :] * n_q + np.arange(n_q)[:, None]
    assert np.array_equal(exact, planted_ids)
    return q.astype(np.float32), db.astype(np.float32), exact, q @ db.T


def coarse_ivfpq(**refine) -> IndexSpec:
    """IVF-PQ whose codes (8 bytes for 64 dims) scramble the planted order; every list probed."""
    return IndexSpec("ivfpq", nlist=16, m=8, nbits=8, nprobe=16, **refine)


def test_quantised_and_graph_indexes_search_unit_vectors_with_l2():
    assert IndexSpec("ivfpq").metric == IndexSpec("hnsw").metric == faiss.METRIC_L2
    assert IndexSpec("flat").metric == IndexSpec("pca").metric == faiss.METRIC_INNER_PRODUCT
    q, db, _, _ = planted(n_db=3000)
    index = PlaceIndex(db.shape[1], coarse_ivfpq(opq=True))
    index.add(db)
    assert index.faiss_index.metric_type == faiss.METRIC_L2
    assert index.spec.factory(64) == "OPQ8,IVF16,PQ8x8"


def test_l2_on_unit_vectors_ranks_like_inner_product():
    q, db, exact, cos = planted()
    ip, l2 = faiss.IndexFlatIP(db.shape[1]), faiss.IndexFlatL2(db.shape[1])
    ip.add(db)
    l2.add(db)
    sims, ids_ip = ip.search(q, 50)
    dists, ids_l2 = l2.search(q, 50)
    np.testing.assert_array_equal(ids_ip, ids_l2)
    np.testing.assert_allclose(dists, 2 - 2 * sims, atol=1e-5)
    graph = PlaceIndex(db.shape[1], IndexSpec("hnsw", hnsw_m=16, ef_search=256))  # an L2 graph, exact at this size
    graph.add(db)
    got_sims, got = graph.search(q, K, similarity=True)
    np.testing.assert_array_equal(got, exact)
    np.testing.assert_allclose(got_sims, np.take_along_axis(cos, exact, 1), atol=1e-5)
    dist, _ = graph.search(q, K)
    np.testing.assert_allclose(dist, 2 - 2 * np.take_along_axis(cos, exact, 1), atol=1e-5)


@pytest.mark.parametrize("refine_from,opq", [("disk", False), ("disk", True), ("fp16", False), ("sq8", False)])
def test_refine_restores_the_exact_top_k(refine_from, opq):
    q, db, exact, cos = planted()
    plain = PlaceIndex(db.shape[1], coarse_ivfpq(opq=opq))
    plain.add(db)
    scrambled = plain.search(q, K)[1]
    assert not np.array_equal(scrambled, exact)  # product quantisation alone loses the exact order
    index = PlaceIndex(db.shape[1], coarse_ivfpq(opq=opq, refine=16, refine_from=refine_from))
    index.add(db[:2500])
    index.add(db[2500:])  # added in two parts: the disk copy follows the index
    sims, ids = index.search(q, K, similarity=True)
    np.testing.assert_array_equal(ids, exact)
    np.testing.assert_allclose(sims, np.take_along_axis(cos, exact, 1), atol=4e-3)  # float16 / 8-bit copies
    assert (index.disk_bytes() > 0) == (refine_from == "disk")
    if refine_from == "disk":  # RAM: the codes and ids; the vectors are the disk copy
        assert index.disk_bytes() == db.shape[0] * db.shape[1] * 2
        assert index.memory_bytes() < plain.memory_bytes() + 1e5


def test_a_disk_refined_index_saves_loads_and_answers_the_same(tmp_path):
    q, db, exact, _ = planted(n_db=5000)
    index = PlaceIndex(db.shape[1], coarse_ivfpq(refine=16))
    index.add(db)
    again = PlaceIndex.load(index.save(tmp_path / "map"))
    assert again.spec == index.spec and (tmp_path / "map" / "vectors.f16").stat().st_size == index.disk_bytes()
    np.testing.assert_array_equal(again.search(q, K)[1], exact)
    again.add(db[:10])  # adding to a loaded index never writes into the saved folder
    assert (tmp_path / "map" / "vectors.f16").stat().st_size == index.disk_bytes()
    PlaceIndex.load(tmp_path / "map")  # still intact


def test_a_modified_or_truncated_disk_copy_is_refused(tmp_path):
    _, db, _, _ = planted(n_db=3000)
    index = PlaceIndex(db.shape[1], coarse_ivfpq(refine=4))
    index.add(db)
    vectors = index.save(tmp_path / "map") / "vectors.f16"
    data = bytearray(vectors.read_bytes())
    data[100] ^= 0xFF
    vectors.write_bytes(bytes(data))
    with pytest.raises(IndexFileError, match="does not match the sha256"):
        PlaceIndex.load(tmp_path / "map")
    vectors.write_bytes(bytes(data[:-64]))
    with pytest.raises(IndexFileError, match="truncated or replaced"):
        PlaceIndex.load(tmp_path / "map", verify=False)


def test_refine_does_not_apply_to_exact_search_and_opq_only_to_ivfpq():
    with pytest.raises(ValueError, match="'flat' index is exact already"):
        IndexSpec("flat", refine=4)
    with pytest.raises(ValueError, match="applies to 'ivfpq', not 'hnsw'"):
        IndexSpec("hnsw", opq=True)
    with pytest.raises(ValueError, match="refine_from must be one of disk, fp16, sq8"):
        IndexSpec("ivfpq", refine=4, refine_from="ssd")


@pytest.mark.parametrize("n,dim,budget,expected", [
    (1_000, 8192, None, "Flat"),                                  # 10^3 x 8192: exact, a few ms
    (20_000, 256, None, "Flat"),                                  # 5e6 multiply-adds per query: exact
    (20_000, 256, 10**7, "IVF512,PQ32x8"),                        # the vectors (20 MB) do not fit 10 MB
    (100_000, 256, 8 * 10**9, "IVF1024,PQ32x8"),                  # 10^5 x 256: a scan takes 5-12 ms
    (100_000, 8192, 8 * 10**9, "PCA256,L2norm,IVF1024,PQ32x8"),   # 8192-d: PCA to 256 first, refine from 8192-d
    (10**6, 256, 8 * 10**9, "IVF1024,PQ32x8"),                    # the section 10 target row
    (2 * 10**6, 256, 8 * 10**9, "IVF1024,PQ32x8"),
    (10**7, 256, 8 * 10**9, "IVF4096,PQ32x8"),                    # 10^7: 4096 lists (1024 took 36 ms a query)
])
def test_auto_picks_the_documented_index_for_given_sizes(n, dim, budget, expected):
    spec = IndexSpec("auto", memory_budget=budget).resolved(n, dim)
    assert spec.factory(dim) == expected
    assert spec == choose_index(n, dim, budget)
    if spec.kind == "ivfpq":
        assert spec.refine == 16 and spec.refine_from == "disk" and spec.nprobe == 128
        assert spec.m + 8 <= 200  # RAM per image: codes and ids


def test_auto_with_a_budget_nothing_fits_says_so():
    with pytest.raises(ValueError, match="raise the budget"):
        choose_index(10**8, 256, 10**9)
    assert parse_bytes("8GB") == 8 * 10**9 and parse_bytes("512MiB") == 512 * 2**20 and parse_bytes(1000) == 1000
    with pytest.raises(ValueError, match="is not a size"):
        parse_bytes("lots")


@pytest.mark.parametrize("text", ["inf", "-inf", "nan", "infGB", "1e400", "1e400MiB"])
def test_a_memory_size_that_is_not_finite_is_a_value_error_and_vpr_bench_exits_2(text, tmp_path, capsys):
    """Before: `--memory-budget inf` ended in an OverflowError traceback (int(float('inf')))."""
    from registry import cli

    with pytest.raises(ValueError, match=rf"memory size {text!r} is not a finite size: write e\.g\. 8GB"):
        parse_bytes(text)
    assert cli.main(["bench", "--index", "auto", f"--memory-budget={text}", "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "is not a finite size" in err and "Traceback" not in err and not (tmp_path / "out").exists()
