"""The runner does each expensive step once: a model's weights are loaded once per run (every dataset evaluates a
copy), the index is built (and IVF-PQ trained) once per (model, dataset), `auto` is chosen once, the database is
read from its store once per index it fills, and an exact index is searched only for the loss it reports."""
from __future__ import annotations

import contextlib
import importlib
import io
from dataclasses import asdict

import pytest
from runner_support import load_runner, runner_module, tiny_models, write_aligned_dataset

import registry
from registry.bench import run as bench_run
from registry.evaluation import PlaceIndex
from registry.evaluation.store import MapStore

FAST = ["--no-progress", "--latency-repeats", "1", "--whitening", "none", "--init", "none"]
IVFPQ = ["--index", "ivfpq", "--ivf-nlist", "1", "--pq-m", "4", "--pq-nbits", "4"]


def _run(argv):
    with contextlib.redirect_stdout(io.StringIO()):
        return bench_run(load_runner().parse_args([*argv, *FAST]))


def _counter(monkeypatch, owner, name, calls=None):
    """Replace owner.name by a wrapper that counts its calls: appends the arguments of each to `calls` (a new list
    unless given), which it returns."""
    real, calls = getattr(owner, name), [] if calls is None else calls

    def counted(*args, **kwargs):
        calls.append((args, kwargs))
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return calls


def _modules(*names):
    """The modules of these names that exist (a module path may differ between versions of the package)."""
    found = []
    for name in names:
        with contextlib.suppress(ImportError):
            found.append(importlib.import_module(name))
    return found


@pytest.fixture(scope="module")
def two_datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("runner_once")
    return write_aligned_dataset(root / "one", 20), write_aligned_dataset(root / "two", 20)


def test_a_pretrained_models_weights_are_loaded_once_per_run_over_every_dataset(two_datasets, tmp_path, monkeypatch):
    one, two = two_datasets
    with tiny_models():
        folder = tmp_path / "gem"
        registry.create("runnertest_gem").save_pretrained(folder)
        loads = _counter(monkeypatch, runner_module("models"), "_load")
        records = _run(["--models", str(folder), "--datasets", f"aligned:{one},aligned:{two}",
                        "--output-dir", str(tmp_path / "out")])
    assert [r["dataset"] for r in records] == ["one", "two"]
    assert len(loads) == 1  # preflight's load; each dataset evaluates a copy of it


def test_a_built_model_is_built_once_and_each_dataset_starts_from_the_same_weights(two_datasets, tmp_path,
                                                                                  monkeypatch):
    one, two = two_datasets
    with tiny_models():
        builds = _counter(monkeypatch, registry, "create")
        both = _run(["--models", "runnertest_netvlad", "--datasets", f"aligned:{one},aligned:{two}",
                     "--output-dir", str(tmp_path / "both")])
        assert len(builds) == 1  # once per run
        alone = _run(["--models", "runnertest_netvlad", "--datasets", f"aligned:{two}",
                      "--output-dir", str(tmp_path / "alone")])
    assert both[1]["recall"] == alone[0]["recall"] and both[1]["weights"] == alone[0]["weights"]


def test_ivfpq_is_trained_once_per_pair_and_the_record_describes_the_index_searched(two_datasets, tmp_path,
                                                                                   monkeypatch):
    one, _ = two_datasets
    trained = _counter(monkeypatch, PlaceIndex, "train")
    searched = []
    real_search = PlaceIndex.search

    def search(self, *args, **kwargs):
        searched.append(self)
        return real_search(self, *args, **kwargs)

    monkeypatch.setattr(PlaceIndex, "search", search)
    with tiny_models():
        (record,) = _run(["--models", "runnertest_gem", "--datasets", f"aligned:{one}", *IVFPQ,
                          "--num-preds-to-save", "2", "--output-dir", str(tmp_path / "out")])
    assert len(trained) == 1 and len({id(index) for index in searched}) == 1
    index = searched[0]
    assert record["index_spec"] == {"factory": "IVF1,PQ4x4", **asdict(index.spec)}
    assert record["index_memory_bytes"] == index.memory_bytes() > 0
    assert record["files"][0].startswith("predictions/") and set(record["recall_loss"]) == {1, 5, 10, 20}


def test_auto_is_chosen_once_and_an_exact_choice_is_its_own_baseline(two_datasets, tmp_path, monkeypatch):
    one, _ = two_datasets
    chosen, exact = [], []
    for owner in _modules("registry.evaluation.index_spec", "registry.evaluation.index", "registry.bench.evaluate"):
        if hasattr(owner, "choose_index"):
            _counter(monkeypatch, owner, "choose_index", chosen)
    for owner in _modules("registry.evaluation.recall", "registry.bench.retrieval"):
        _counter(monkeypatch, owner, "search", exact)
    with tiny_models():
        (record,) = _run(["--models", "runnertest_gem", "--datasets", f"aligned:{one}", "--index", "auto",
                          "--output-dir", str(tmp_path / "out")])
    assert len(chosen) == 1
    assert record["index_choice"]["kind"] == "flat" and record["recall_loss"] == {1: 0.0, 5: 0.0, 10: 0.0, 20: 0.0}
    assert exact == []  # the chosen flat index ranked; no second, exact one


@pytest.mark.parametrize("index, indexes", [("flat", 1), ("ivfpq", 2)])
def test_the_database_is_read_from_its_store_once_per_index_it_fills(two_datasets, tmp_path, monkeypatch, index,
                                                                     indexes):
    pytest.importorskip("lance")
    one, _ = two_datasets
    rows = []
    real_take = MapStore._take

    def take(self, positions):
        if self.folder.name == "database":
            rows.append(len(positions))
        return real_take(self, positions)

    monkeypatch.setattr(MapStore, "_take", take)
    options = IVFPQ if index == "ivfpq" else []
    with tiny_models():
        (record,) = _run(["--models", "runnertest_gem", "--datasets", f"aligned:{one}", *options,
                          "--num-preds-to-save", "2", "--store", str(tmp_path / "store"),
                          "--output-dir", str(tmp_path / "out")])
    assert sum(rows) == indexes * record["num_database"]  # ivfpq: its own index and the exact one for the loss
