"""registry.training.release: the run chosen on validation, the half-precision release measured as stored, its
reference descriptors, and `vpr release build` as parse -> call -> print."""
from __future__ import annotations

import json

import numpy as np
import pytest
from test_train_cli import _args  # the training tests' own module (on sys.path, as tiny_vpr is)

import registry
from registry.cli import release as release_cli
from registry.cli import train as train_cli
from registry.datasets import load_dataset
from registry.evaluation.recall_table import recall_table
from registry.training import release


@pytest.fixture(scope="module")
def two_runs(tiny_roots_module, tmp_path_factory):
    base = tmp_path_factory.mktemp("runs")
    runs = []
    for seed in (0, 1):
        out = base / f"tiny_seed{seed}"
        assert train_cli.main(_args(tiny_roots_module, out, "--epochs", "1", "--seed", str(seed),
                                    "--test-set", f"aligned:{tiny_roots_module[0]}")) == 0
        runs.append(out)
    return runs


@pytest.fixture(scope="module")
def tiny_roots_module(tmp_path_factory):
    import tiny_vpr

    base = tmp_path_factory.mktemp("traversals")
    return tiny_vpr.write_traversal(base / "train", places=16, seed=0), \
        tiny_vpr.write_traversal(base / "val", places=12, seed=1)


def test_build_releases_the_best_run_measured_as_stored_with_its_reference(two_runs, tiny_roots_module, tmp_path,
                                                                          monkeypatch, capsys):
    train_root, val_root = (f"aligned:{r}" for r in tiny_roots_module)
    monkeypatch.setattr(release, "VAL_SET", val_root)
    monkeypatch.setattr(release, "TEST_SETS", (train_root,))
    monkeypatch.setattr(release, "PROTOCOL", {val_root: {"data": "val"}, train_root: {"data": "train"}})
    assert release_cli.main(["build", "--runs", *map(str, two_runs), "--tag", "demo", "--out-dir",
                             str(tmp_path / "out"), "--reference-dir", str(tmp_path / "ref")]) == 0
    (report,) = json.loads(capsys.readouterr().out)
    summaries = [json.loads((r / "train" / "summary.json").read_text()) for r in two_runs]
    scores = [s["final_val"]["R@5"] for s in summaries]
    best = max(range(2), key=lambda i: (scores[i], -i))  # ties go to the smaller seed
    assert report["chosen"] == two_runs[best].name and report["scores"] == dict(zip(
        [r.name for r in two_runs], scores))
    folder = tmp_path / "out" / "tiny_netvlad.demo"
    stored = registry.VPRModel.from_pretrained(str(folder))
    config = json.loads((folder / "config.json").read_text())
    assert config["weights_dtype"] == "float16" and config["release"]["seed"] == best
    assert config["release"]["fp32_recalls"] == summaries[best]["test"]
    measured = recall_table(stored, [load_dataset(val_root), load_dataset(train_root)], progress=False)
    assert config["recalls"] == measured == report["fp16"]
    reference = np.load(tmp_path / "ref" / "tiny_netvlad.demo.npz")
    expected = release.reference_descriptors(stored)
    assert sorted(reference.files) == sorted(expected)
    for key in expected:
        np.testing.assert_allclose(reference[key], expected[key], rtol=0, atol=2e-3)  # fp32 model vs its fp16 copy


def test_a_run_that_is_not_finished_is_refused_naming_it(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    with pytest.raises(release.ReleaseError, match="no config.json"):
        release.build([tmp_path / "run"], "demo")
    assert release_cli.main(["build", "--runs", str(tmp_path / "run")]) == 1
    assert f"vpr release: error: {tmp_path / 'run'}: no config.json" in capsys.readouterr().err
