"""The runner's --store (resumable descriptor stores) and its index options (HNSW, PCA-reduced)."""
from __future__ import annotations

import contextlib
import io
import json

import numpy as np
from runner_support import load_runner, tiny_models, write_aligned_dataset

from registry.bench import PairsFailed
from registry.bench import run as bench_run
from registry.evaluation import INDEX_KINDS, load_descriptors, open_store


def _run(argv):
    runner, stdout = load_runner(), io.StringIO()
    with contextlib.redirect_stdout(stdout):
        return bench_run(runner.parse_args([*argv, "--no-progress", "--latency-repeats", "1"]))


def test_store_holds_the_descriptors_the_recall_was_computed_from_and_is_reused(tmp_path):
    data = write_aligned_dataset(tmp_path / "data", 12)
    argv = ["--models", "runnertest_gem", "--datasets", f"aligned:{data}", "--store", str(tmp_path / "store"),
            "--save-descriptors", "--whitening", "none", "--init", "none"]
    with tiny_models():
        first = _run([*argv, "--output-dir", str(tmp_path / "one")])[0]
        again = _run([*argv, "--output-dir", str(tmp_path / "two")])[0]
    folder = next((tmp_path / "store").iterdir())
    q, db = open_store(folder / "queries"), open_store(folder / "database")
    assert q.complete and db.complete and len(db.images) == first["num_database"]
    saved_q, saved_db = load_descriptors(tmp_path / "one" / first["files"][0])
    assert (saved_q == np.asarray(q.descriptors)).all() and (saved_db == np.asarray(db.descriptors)).all()
    assert again["recall"] == first["recall"]


def test_hnsw_and_pca_indexes_report_their_loss_against_exact_search(tmp_path):
    data = write_aligned_dataset(tmp_path / "data", 12)
    with tiny_models():
        for index, extra in (("hnsw", ["--hnsw-m", "8", "--ef-search", "16"]), ("pca", ["--pca-dim", "8"])):
            out = tmp_path / index
            r = _run(["--models", "runnertest_gem", "--datasets", f"aligned:{data}", "--index", index, *extra,
                      "--whitening", "none", "--init", "none", "--recall-ns", "1,3", "--output-dir", str(out)])[0]
            assert r["index"] == index and set(r["recall_loss"]) == {1, 3}
            meta = json.loads((out / "results.json").read_text())["meta"]
            assert meta["index_options"] == ({"hnsw_m": 8, "ef_construction": 40, "ef_search": 16} if index == "hnsw"
                                             else {"pca_dim": 8})


def test_the_runner_offers_every_index_kind_and_auto():
    index = next(a for a in load_runner().build_parser()._actions if a.dest == "index")
    assert tuple(index.choices) == INDEX_KINDS + ("auto",)


def test_index_auto_prints_and_records_its_choice_and_refine_reports_its_loss(tmp_path, capsys):
    """--index auto --memory-budget: the index choose_index gives for this database (20 images of 16-d: exact)
    is printed and recorded in results.json; --refine on IVF-PQ runs and reports its loss against exact search."""
    data = write_aligned_dataset(tmp_path / "data", 20)
    common = ["--models", "runnertest_gem", "--datasets", f"aligned:{data}", "--whitening", "none", "--init", "none",
              "--recall-ns", "1,3"]
    with tiny_models():
        auto = _run([*common, "--index", "auto", "--memory-budget", "8GB", "--output-dir", str(tmp_path / "auto")])[0]
        refined = _run([*common, "--index", "ivfpq", "--ivf-nlist", "1", "--pq-m", "4", "--pq-nbits", "4",
                        "--refine", "4", "--output-dir", str(tmp_path / "ivfpq")])[0]
    saved = json.loads((tmp_path / "auto" / "results.json").read_text())
    assert saved["meta"]["index_options"] == {"memory_budget": 8 * 10**9}
    assert saved["results"][0]["index_choice"]["factory"] == "Flat" == auto["index_choice"]["factory"]
    assert "--index auto: Flat for 20 " in capsys.readouterr().err
    assert refined["recall_loss"][1] == 0.0  # 20 vectors: the 4x shortlist holds the exact neighbours
    meta = json.loads((tmp_path / "ivfpq" / "results.json").read_text())["meta"]
    assert meta["index_options"]["refine"] == 4 and meta["index_options"]["refine_from"] == "disk"


def test_index_options_that_cannot_apply_exit_2_before_any_work(tmp_path, capsys):
    runner = load_runner()
    for argv, message in ((["--index", "flat", "--memory-budget", "8GB"], "--memory-budget applies to --index auto"),
                          (["--index", "auto", "--memory-budget", "lots"], "is not a size"),
                          (["--index", "flat", "--refine", "4"], "--refine / --opq do not apply to --index flat"),
                          (["--index", "hnsw", "--opq"], "--opq rotates before product quantisation")):
        try:
            runner.parse_args([*argv, "--output-dir", str(tmp_path / "out")])
        except SystemExit as exit:
            assert exit.code == 2
        else:
            raise AssertionError(f"{argv} was accepted")
        assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_pca_from_whitening_keeps_the_whitenings_leading_components(tmp_path):
    """--index pca --pca-from whitening: the k leading components of the model's (here fitted) whitening, exactly
    the full whitened descriptors' first k coordinates re-normalised; recall is that of brute force on them."""
    import numpy as np

    data = write_aligned_dataset(tmp_path / "data", 12)
    common = ["--models", "runnertest_netvlad", "--datasets", f"aligned:{data}", "--init", "none",
              "--recall-ns", "1,3", "--save-descriptors"]
    with tiny_models():
        full = _run([*common, "--output-dir", str(tmp_path / "full")])[0]
        reduced = _run([*common, "--index", "pca", "--pca-dim", "4", "--pca-from", "whitening",
                        "--output-dir", str(tmp_path / "pca")])[0]
    assert full["descriptor_dim"] == 8 and reduced["descriptor_dim"] == 4
    assert "leading components" in reduced["pca"] and "recall_loss" not in reduced  # exact search on 4-d
    fq, fdb = load_descriptors(tmp_path / "full" / full["files"][0])
    rq, rdb = load_descriptors(tmp_path / "pca" / reduced["files"][0])

    def lead(x):
        x = np.asarray(x, dtype=np.float64)[:, :4]
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    np.testing.assert_allclose(rq, lead(fq), atol=1e-5)
    np.testing.assert_allclose(rdb, lead(fdb), atol=1e-5)
    ranks = np.argsort(-(lead(fq) @ lead(fdb).T), axis=1, kind="stable")
    from registry.datasets import load_dataset

    positives = load_dataset(f"aligned:{data}").positives
    for n in (1, 3):
        hits = np.mean([np.isin(ranks[i, :n], positives[i]).any() for i in range(len(ranks))])
        assert abs(reduced["recall"][n] - 100 * hits) < 1e-6


def test_pca_from_whitening_without_a_whitening_fails_the_pair_with_the_fix(tmp_path):
    import pytest


    data = write_aligned_dataset(tmp_path / "data", 12)
    with tiny_models(), pytest.raises(PairsFailed) as err:
        _run(["--models", "runnertest_gem", "--datasets", f"aligned:{data}", "--init", "none", "--index", "pca",
              "--pca-dim", "4", "--pca-from", "whitening", "--output-dir", str(tmp_path / "out")])
    message = err.value.failures[0]["error"]
    assert "--pca-from whitening" in message and "--pca-from database" in message
