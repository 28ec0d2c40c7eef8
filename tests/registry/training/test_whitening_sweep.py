"""The whitening sweep (registry.training.sweep) and benchmarks/plot_training.py on a tiny trained run."""
from __future__ import annotations

import importlib.util
import json

import pytest
from shared_paths import REPO
from tiny_vpr import small_config

import registry
from registry.cli import sweep as whitening_sweep
from registry.evaluation import extract_dataset, recall_at_n
from registry.training import Trainer


def _recalls(model, ds):
    q, db = extract_dataset(model, ds, batch_size=8, device="cpu", progress=False)
    return {f"R@{n}": round(float(v), 2) for n, v in recall_at_n(q, db, ds.positives, (1, 5, 10))["recall"].items()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_roots):
    from registry.datasets import load_dataset

    train, val = (load_dataset(f"aligned:{root}") for root in tiny_roots)
    out = tmp_path_factory.mktemp("sweep") / "run"
    trainer = Trainer(registry.create("tiny_netvlad"), train, out, small_config(epochs=1), val_set=val,
                      progress=False)
    trainer.init_clusters()
    trainer.fit()
    return out


@pytest.mark.parametrize("cached", [False, True])
def test_rows_match_the_models_own_descriptors_and_the_choice_is_by_validation(trained, tiny_roots, tmp_path,
                                                                                  cached):
    train_root, val_root = tiny_roots
    argv = [str(trained), "--val-set", f"aligned:{val_root}", "--test-set", f"aligned:{train_root}",
            "--dims", "8", "3", "none", "--out", str(tmp_path / "rows.json")]
    assert whitening_sweep.main(argv + (["--cache-features", str(tmp_path / "cache")] if cached else [])) == 0
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert [r["dim"] for r in rows] == [8, 3, None]
    model = registry.create("tiny_netvlad", pretrained=str(trained))
    from registry.datasets import load_dataset

    val, test = load_dataset(f"aligned:{val_root}"), load_dataset(f"aligned:{train_root}")
    full = {r["dim"]: r for r in rows}
    assert full[8]["val"] == pytest.approx(_recalls(model, val), abs=0.01)
    assert full[8]["train"] == pytest.approx(_recalls(model, test), abs=0.01)
    model.set_whitening_dim(None)
    assert full[None]["val"] == pytest.approx(_recalls(model, val), abs=0.01)
    scores = [r["val"]["R@5"] for r in rows]
    assert [r["chosen"] for r in rows] == [i == scores.index(max(scores)) for i in range(3)]


def test_a_size_beyond_the_whitening_is_refused(trained, tiny_roots, capsys):
    assert whitening_sweep.main([str(trained), "--val-set", f"aligned:{tiny_roots[1]}", "--dims", "16"]) == 1
    assert "exceed" in capsys.readouterr().err


def test_an_out_file_that_cannot_be_written_fails_before_any_extraction(trained, tiny_roots, tmp_path, capsys,
                                                                        monkeypatch):
    import registry.training.sweep as sweep_module

    monkeypatch.setattr(sweep_module, "sweep", lambda *a, **k: pytest.fail("extraction started"))
    (tmp_path / "a_file").write_text("in the way")
    assert whitening_sweep.main([str(trained), "--val-set", f"aligned:{tiny_roots[1]}", "--dims", "4",
                                 "--out", str(tmp_path / "a_file" / "sweep.json")]) == 2
    assert f"--out {tmp_path / 'a_file' / 'sweep.json'} cannot be written: {tmp_path / 'a_file'} is a file" in \
        capsys.readouterr().err


def _plot_training():
    """benchmarks/plot_training.py, loaded with its sibling _outputs (which it imports by that name)."""
    import sys

    for name in ("_outputs", "plot_training"):
        if name not in sys.modules:
            spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            sys.modules[name] = module
    return sys.modules["plot_training"]


def test_plot_training_draws_every_run_and_names_a_missing_log(trained, tmp_path, capsys):
    plot_training = _plot_training()
    plot_training.main([str(trained), "--metric", "R@1", "--out", str(tmp_path / "curve.png")])
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    log = [json.loads(line) for line in (trained / "train" / "log.jsonl").read_text().splitlines()]
    row = capsys.readouterr().out.splitlines()[-1]  # header, separator, then the run's row
    assert row.startswith(f"| {trained.name} |")
    assert row.split("|")[2:-1] == [f" {r['val_R@1']:.2f} " for r in log]
    with pytest.raises(SystemExit, match="log.jsonl not found"):
        plot_training.main([str(tmp_path), "--out", str(tmp_path / "x.png")])


def test_plot_training_json_holds_each_runs_summary_and_its_table_prints_it(trained, tmp_path):
    plot_training = _plot_training()
    out = tmp_path / "tables" / "runs.json"
    plot_training.main([str(trained), "--json", str(out)])
    summary = json.loads((trained / "train" / "summary.json").read_text())
    log = [json.loads(line) for line in (trained / "train" / "log.jsonl").read_text().splitlines()]
    record = json.loads(out.read_text())["runs"][0]
    assert record["values"] == [r["val_R@5"] for r in log] and record["final_val"] == summary["final_val"]
    assert record["train_seconds"] == summary["train_seconds"] and not (tmp_path / "tables" / "runs.png").exists()
    epochs, outcome = [t for t in out.with_suffix(".md").read_text().split("\n\n") if t.strip()]
    assert epochs.splitlines()[2].split("|")[2:-1] == [f" {r['val_R@5']:.2f} " for r in log]
    cells = [c.strip() for c in outcome.splitlines()[2].strip("|").split("|")]
    v = summary["final_val"]
    assert cells[:3] == [trained.name, f"{summary['best']['generation']}, {summary['best']['epoch']}",
                         f"{v['R@1']:.2f} / {v['R@5']:.2f} / {v['R@10']:.2f}"]
    (tmp_path / "bare" / "train").mkdir(parents=True)  # a run still training: its log, no summary yet
    (tmp_path / "bare" / "train" / "log.jsonl").write_text((trained / "train" / "log.jsonl").read_text())
    with pytest.raises(SystemExit, match="summary.json not found"):
        plot_training.main([str(tmp_path / "bare"), "--json", str(out)])
