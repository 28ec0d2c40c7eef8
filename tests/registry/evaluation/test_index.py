"""faiss indexes against exact search on a small set, and PlaceIndex: add, query one image, save and load."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_encoder import TinyEncoder, write_images  # pytest puts this folder on the import path

from registry.evaluation import IndexSpec, PlaceIndex, extract_descriptors, extract_to_store, recall_at_n, search
from registry.evaluation.index import build_index, index_bytes, keep_projection_only, normalise

faiss = pytest.importorskip("faiss")


def clustered(n_db: int = 3000, n_q: int = 200, dim: int = 64, rank: int = 64, seed: int = 0):
    """Unit database vectors around 150 centres (in a `rank`-d subspace), queries = database items + noise."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((dim, rank)))[0]
    centres = rng.standard_normal((150, rank))
    db = centres[rng.integers(0, 150, n_db)] + 0.6 * rng.standard_normal((n_db, rank))
    truth = rng.choice(n_db, n_q, replace=False)
    q = db[truth] + 0.3 * rng.standard_normal((n_q, rank))
    return normalise(q @ basis.T), normalise(db @ basis.T)


def agreement(pred: np.ndarray, exact: np.ndarray, k: int) -> float:
    """Share of queries whose exact nearest neighbour is in the index's top k."""
    return float(np.mean([exact[i, 0] in pred[i, :k] for i in range(len(exact))]))


def test_flat_is_exact_search():
    q, db = clustered()
    exact = np.argsort(-(q @ db.T), axis=1)[:, :5]
    np.testing.assert_array_equal(search(q, db, 5, "flat"), exact)


def test_ivfpq_similarities_are_within_the_quantisation_error():
    """IVF-PQ's promise: each returned similarity is off by at most the norm of that vector's PQ error."""
    q, db = clustered()
    spec = IndexSpec("ivfpq", nlist=16, m=16, nbits=8, nprobe=16)
    index = build_index(spec, db.shape[1], db)
    index.add(db)
    faiss.extract_index_ivf(index).make_direct_map()
    assert index.metric_type == faiss.METRIC_L2  # L2 on unit vectors: the similarity is 1 - d / 2
    dists, ids = index.search(q, 5)
    sims = 1 - dists / 2
    error = np.linalg.norm(db[ids.ravel()] - index.reconstruct_batch(ids.ravel()), axis=1).reshape(ids.shape)
    true = np.einsum("qd,qkd->qk", q, db[ids])
    # |q - x'|^2 = |q - x|^2 + 2 (q - x).e + |e|^2 for x' = x - e: off by at most |e| + |e|^2 / 2 in similarity
    assert np.all(np.abs(sims - true) <= error + error**2 / 2 + 1e-4)
    exact = search(q, db, 5, "flat")
    assert agreement(ids, exact, 5) >= 0.95


@pytest.mark.parametrize("ef_search", [16, 64])
def test_hnsw_finds_the_exact_neighbour(ef_search):
    q, db = clustered()
    pred = search(q, db, 5, "hnsw", hnsw_m=16, ef_search=ef_search)
    assert agreement(pred, search(q, db, 5, "flat"), 1) >= 0.97  # stated tolerance: 3% of queries at most


def test_search_params_retune_a_built_index_towards_exact_search(tmp_path):
    """Raising HNSW's ef_search / IVF-PQ's nprobe on the built index gives what an index built with them gives,
    never agrees less with exact search, and survives save / load."""
    q, db = clustered()
    exact = search(q, db, 5, "flat")
    for kind, low, high, key in (("hnsw", {"hnsw_m": 4, "ef_search": 4}, 256, "ef_search"),
                                 ("ivfpq", {"nlist": 64, "m": 16, "nprobe": 1}, 64, "nprobe")):
        index = PlaceIndex(db.shape[1], IndexSpec(kind, **low))
        index.add(db)
        before = agreement(index.search(q, 5)[1], exact, 5)
        index.set_search_params(**{key: high})
        after = index.search(q, 5)[1]
        rebuilt = PlaceIndex(db.shape[1], IndexSpec(kind, **{**low, key: high}))
        rebuilt.add(db)
        np.testing.assert_array_equal(after, rebuilt.search(q, 5)[1])
        assert agreement(after, exact, 5) >= before and agreement(after, exact, 1) >= 0.97
        loaded = PlaceIndex.load(index.save(tmp_path / kind))
        assert getattr(loaded.spec, key) == high
        np.testing.assert_array_equal(loaded.search(q, 5)[1], after)


def test_search_params_of_another_index_kind_are_refused():
    index = PlaceIndex(8, IndexSpec("hnsw"))
    with pytest.raises(ValueError, match="nprobe does not apply to a 'hnsw' index"):
        index.set_search_params(nprobe=8)
    with pytest.raises(ValueError, match=r"ef_search must be in 1\.\.65536"):
        index.set_search_params(ef_search=0)


def test_pca_is_lossless_when_the_data_fits_its_dimensions():
    q, db = clustered(rank=16)
    pred = search(q, db, 5, "pca", pca_dim=16)
    assert agreement(pred, search(q, db, 5, "flat"), 1) >= 0.95  # centring + re-normalising may swap near ties


def low_rank(n_db: int = 2000, n_q: int = 40, dim: int = 512, rank: int = 24, seed: int = 0):
    """Unit vectors in a `rank`-d subspace of `dim` dims with distinct spreads per direction (a clear PCA)."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((dim, rank)))[0] * np.linspace(3.0, 1.0, rank)
    return normalise(rng.standard_normal((n_q, rank)) @ basis.T), normalise(rng.standard_normal((n_db, rank)) @ basis.T)


@pytest.mark.parametrize("factory, metric", [("PCA32,L2norm,Flat", "METRIC_INNER_PRODUCT"),
                                             ("PCA32,L2norm,IVF8,PQ8x4", "METRIC_L2")])
def test_a_trained_pca_keeps_only_its_projection_and_searches_the_same(factory, metric):
    q, db = low_rank()
    dim = db.shape[1]
    index = faiss.index_factory(dim, factory, getattr(faiss, metric))
    index.train(db)
    index.add(db)
    dist_before, ids_before = index.search(q, 10)
    bytes_before = index_bytes(index)
    assert keep_projection_only(index) == 1
    kept = faiss.downcast_VectorTransform(index.chain.at(0))
    assert type(kept) is faiss.LinearTransform and kept.A.size() == 32 * dim and kept.b.size() == 32
    dist_after, ids_after = index.search(q, 10)
    np.testing.assert_array_equal(ids_after, ids_before)
    np.testing.assert_array_equal(dist_after, dist_before)
    # what went: the d x d eigenvector matrix, the d eigenvalues and the d-dim mean (and their few header bytes)
    assert 0 <= bytes_before - index_bytes(index) - 4 * (dim * dim + 2 * dim) < 64
    assert keep_projection_only(index) == 0  # nothing left to slim


def test_a_pca_index_saves_only_its_projection_and_ranks_like_brute_force_pca(tmp_path):
    q, db = low_rank()
    n, dim, d = len(db), db.shape[1], 32
    index = PlaceIndex(dim, IndexSpec("pca", pca_dim=d))
    index.add(db)
    x = db.astype(np.float64)  # brute force: float64 PCA of the database, projections re-normalised
    mu = x.mean(0)
    proj = np.linalg.eigh((x - mu).T @ (x - mu))[1][:, ::-1][:, :d]
    unit = lambda v: (v - mu) @ proj / np.linalg.norm((v - mu) @ proj, axis=1, keepdims=True)  # noqa: E731
    exact = np.argsort(-(unit(q.astype(np.float64)) @ unit(x).T), axis=1, kind="stable")[:, :10]
    np.testing.assert_array_equal(index.search(q, 10)[1], exact)
    loaded = PlaceIndex.load(index.save(tmp_path / "map"))
    np.testing.assert_array_equal(loaded.search(q, 10)[1], exact)
    size = (tmp_path / "map" / "index.faiss").stat().st_size
    held = 4 * (d * dim + d) + 4 * d * n  # the projection (A, b) and the projected vectors
    assert held <= size < held + 1024, (size, held)


def test_pca_reduced_recall_loss_is_reported_and_small():
    q, db = clustered(rank=64)
    positives = [np.flatnonzero((db @ v) > np.sort(db @ v)[-4]) for v in q]  # each query's exact top 3
    result = recall_at_n(q, db, positives, ns=(1, 5), index="pca", pca_dim=48)
    assert result["exact_recall"][5] == 100.0
    assert result["recall_loss"][5] <= 10.0


def test_every_index_kind_is_a_recall_option():
    q, db = clustered(n_db=1000, n_q=50)
    positives = [np.array([i]) for i in np.argmax(q @ db.T, axis=1)]
    for kind, options in (("flat", {}), ("ivfpq", {"nlist": 8, "nprobe": 8}), ("hnsw", {}), ("pca", {"pca_dim": 32})):
        result = recall_at_n(q, db, positives, ns=(1, 5), index=kind, **options)
        assert result["index"] == kind and result["recall"][5] >= 80.0, (kind, result)


def test_an_unknown_index_kind_names_the_valid_ones():
    with pytest.raises(ValueError, match="flat, ivfpq, hnsw, pca, auto"):
        IndexSpec("lsh")


@pytest.fixture
def map_and_model(tmp_path):
    images = write_images(tmp_path / "images", 12)
    model = TinyEncoder()
    return images, model, extract_descriptors(model, images, device="cpu", progress=False)


def test_query_one_image_returns_its_place_first_with_distances(map_and_model):
    images, model, db = map_and_model
    index = PlaceIndex(db.shape[1], IndexSpec("flat"), model=model)
    index.add(db, places=[Path(p).stem for p in images])
    top = index.query(images[7], k=3)
    assert len(top) == 3 and top[0][0] == "007" and top[0][1] == pytest.approx(0.0, abs=1e-5)
    dists = [d for _, d in top]
    assert dists == sorted(dists) and all(0.0 <= d <= 4.0 for d in dists)
    expected = 2 - 2 * (db[7] @ db[[int(p) for p, _ in top]].T)
    np.testing.assert_allclose(dists, expected, atol=1e-5)


def test_a_saved_index_loads_and_answers_the_same(map_and_model, tmp_path):
    images, model, db = map_and_model
    index = PlaceIndex(db.shape[1], IndexSpec("hnsw", hnsw_m=8, ef_search=32), model=model)
    index.add(db[:6], places=images[:6])
    index.add(db[6:], places=images[6:])
    before = index.query(images[3], k=4)
    again = PlaceIndex.load(index.save(tmp_path / "map"), model=model)
    assert again.ntotal == 12 and again.spec == index.spec
    assert again.query(images[3], k=4) == before


def test_a_place_index_reads_a_descriptor_store(map_and_model, tmp_path):
    images, model, db = map_and_model
    store = extract_to_store(model, images, tmp_path / "store", chunk_size=5, device="cpu", progress=False)
    index = PlaceIndex(store.descriptors.shape[1], model=model)
    index.add(store.descriptors, places=store.images)
    assert index.query(images[2], k=1)[0][0] == images[2]
    assert index.memory_bytes() >= db.nbytes


def test_query_without_a_model_or_descriptors_says_what_is_missing(map_and_model):
    images, model, db = map_and_model
    index = PlaceIndex(db.shape[1])
    with pytest.raises(ValueError, match="add"):
        index.search(db[:1], 1)
    index.add(db)
    with pytest.raises(ValueError, match="needs the model"):
        index.query(images[0])


def test_query_encodes_through_the_models_encode_step_which_refuses_non_finite_descriptors(map_and_model):
    from registry.errors import NonFiniteOutputError

    images, model, db = map_and_model
    index = PlaceIndex(db.shape[1], IndexSpec("flat"), model=model)
    index.add(db)
    model.train()
    assert index.query(images[4], k=1)[0][0] == 4 and model.training  # evaluated in eval mode, its mode restored
    with torch.no_grad():
        model.conv.bias.fill_(float("nan"))
    with pytest.raises(NonFiniteOutputError, match="NaN or Inf descriptors"):
        index.query(images[4], k=1)
