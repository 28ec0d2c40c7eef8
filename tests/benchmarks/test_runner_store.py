"""The runner's --store (resumable descriptor stores) and its index options (HNSW, PCA-reduced)."""
from __future__ import annotations

import contextlib
import io
import json

from runner_support import load_runner, runner_module, tiny_models, write_aligned_dataset

from registry.evaluation import INDEX_KINDS, load_descriptors, open_store


def _run(argv):
    runner, stdout = load_runner(), io.StringIO()
    with contextlib.redirect_stdout(stdout):
        return runner.run(runner.parse_args([*argv, "--no-progress", "--latency-repeats", "1"]))


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
    assert (saved_q == q.descriptors).all() and (saved_db == db.descriptors).all()
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


def test_the_runner_offers_every_index_kind():
    assert runner_module("cli").INDEX_KINDS == INDEX_KINDS
