"""benchmarks/train.py: documented options, fast failures, one process and torchrun DDP (gloo, 2 CPU processes)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from registry.cli import train as train_cli

REPO = Path(__file__).resolve().parents[3]
TRAIN = REPO / "benchmarks" / "train.py"
HERE = Path(__file__).resolve().parent


def _env() -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), str(REPO), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1")
    return env


def _args(roots, out, *extra):
    train_root, val_root = roots
    return ["--plugin", "tiny_vpr", "--model", "tiny_netvlad", "--train-set", f"aligned:{train_root}",
            "--val-set", f"aligned:{val_root}", "--epochs", "2", "--optimizer", "adam", "--lr", "1e-3",
            "--weight-decay", "0", "--neg-pool", "8", "--cache-size", "8", "--no-jitter", "--temperatures", "0.1",
            "--cluster-descriptors", "400", "--cluster-per-image", "50", "--pca-images", "32", "--threads", "1",
            "--no-progress", "--output", str(out), *extra]


def test_help_explains_every_option():
    parser = train_cli.build_parser()
    undocumented = [a.dest for a in parser._actions if not a.help]
    assert undocumented == []
    text = parser.format_help()
    for option in ("--model", "--cache-features", "--resume", "--push-to-hub", "--neg-pool", "--temperatures",
                   "--train-layers", "--backbone-weights", "--generations", "--device", "--whitening-dims"):
        assert option in text


def test_the_trainer_is_a_module_of_the_installed_package_runnable_from_any_folder(tmp_path):
    for command, prog in (([sys.executable, "-m", "registry.cli", "train"], "python -m registry.cli train"),
                          ([sys.executable, str(TRAIN)], f"python {TRAIN}")):
        done = subprocess.run([*command, "--help"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert re.match(rf"usage: {re.escape(prog)}\s", done.stdout) and "--whitening-dims" in done.stdout  # may wrap
    bad = subprocess.run([sys.executable, "-m", "registry.cli", "train", "--model", "netvlad", "--output",
                          str(tmp_path / "o"), "--resume"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert bad.returncode == 2 and "python -m registry.cli train: error: --resume: no checkpoint" in bad.stderr


@pytest.mark.parametrize("extra, message", [
    (["--resume"], "no checkpoint"),
    (["--clusters", "/nonexistent/centroids.h5"], "file not found"),
    (["--input-size", "8", "8"], "--input-size 8 8: both sides must be >= 16 and <= 8192 (valid: 16..8192); that is "
                                 "the range of netvlad_vgg16"),
    (["--input-size", "-5", "64"], "--input-size: must be >= 1, got -5"),
    (["--input-size", "64", "100000"], "--input-size 64 100000: both sides must be >= 16 and <= 8192"),
    (["--whitening-dims", "256", "abc"], "integer or 'none'"),
    (["--runtime", "tensorrt"], "--runtime tensorrt: unknown; choose from torch, compile, onnx, onnx-int8"),
    (["--runtime", "onnx,onnx"], "--runtime lists a runtime twice: onnx,onnx"),
    (["--runtime", "onnx-int8", "--calibration-images", "0"], "--calibration-images: must be >= 1, got 0"),
    (["--device", "tpu"], "--device: 'tpu' is not a device; use auto, cpu, cuda or cuda:N"),
    (["--data-root", "/no/such/root"], "--data-root: folder not found: /no/such/root"),
])
def test_bad_arguments_fail_before_any_work(tmp_path, capsys, extra, message):
    assert train_cli.main(["--model", "netvlad", "--output", str(tmp_path / "o"), *extra]) == 2
    assert message in capsys.readouterr().err


def test_bad_values_fail_with_the_option_named(tiny_roots, tmp_path, capsys):
    assert train_cli.main(_args(tiny_roots, tmp_path / "o", "--lr", "-1")) == 2
    assert "lr > 0" in capsys.readouterr().err
    assert train_cli.main(_args(tiny_roots, tmp_path / "o2", "--model", "tiny_netvlda")) == 2
    assert "tiny_netvlad" in capsys.readouterr().err  # the closest valid name


def test_torchrun_with_two_gloo_processes_matches_one_process(tiny_roots, tmp_path):
    one = subprocess.run([sys.executable, str(TRAIN), *_args(tiny_roots, tmp_path / "one", "--batch-size", "4")],
                         env=_env(), capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    # the test-set evaluation keeps rank 0 busy after rank 1 has left: rank 1 must exit cleanly meanwhile
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          str(TRAIN), *_args(tiny_roots, tmp_path / "two", "--batch-size", "2",
                                             "--test-set", f"aligned:{tiny_roots[1]}")],
                         env=_env(), capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    config = json.loads((tmp_path / "two" / "config.json").read_text())
    assert config["training"]["world_size"] == 2
    a = load_file(str(tmp_path / "one" / "model.safetensors"))
    b = load_file(str(tmp_path / "two" / "model.safetensors"))
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5)
    summary = json.loads((tmp_path / "two" / "train" / "summary.json").read_text())
    assert [r["epoch"] for r in summary["history"]] == [0, 1, 2]
    assert len(summary["test"]) == 1 and all(0 <= r["R@1"] <= 100 for r in summary["test"].values())


def test_resume_from_the_command_line(tiny_roots, tmp_path, capsys):
    out = tmp_path / "run"
    assert train_cli.main(_args(tiny_roots, out, "--epochs", "1")) == 0
    first = json.loads((out / "train" / "summary.json").read_text())
    assert train_cli.main(_args(tiny_roots, out, "--epochs", "1", "--resume")) == 0  # finished: nothing to redo
    again = json.loads((out / "train" / "summary.json").read_text())
    assert again["history"] == first["history"] and again["best"] == first["best"]
    assert train_cli.main(_args(tiny_roots, out, "--epochs", "2", "--resume")) == 1
    assert "epochs=1 (now 2)" in capsys.readouterr().err


def test_init_and_cluster_seeds_split_from_the_training_seed(tiny_roots, tmp_path):
    parser = train_cli.build_parser()

    def built(tag, *extra):
        trainer, _ = train_cli.setup(parser.parse_args(_args(tiny_roots, tmp_path / tag, *extra)))
        return trainer

    def weights(trainer):
        return {k: v.clone() for k, v in trainer.model.state_dict().items()}

    def centres(trainer, tag):
        trainer.init_clusters(tmp_path / f"{tag}.h5")
        return weights(trainer)

    base = built("base", "--seed", "0")
    w_base, c_base = weights(base), centres(base, "base")
    moved = built("moved", "--seed", "5", "--init-seed", "0", "--cluster-seed", "0")  # only the stream moved
    assert moved.cfg.seed == 5 and moved.cfg.seed_of_clusters() == 0
    for k, v in weights(moved).items():
        torch.testing.assert_close(v, w_base[k], rtol=0, atol=0)
    for k, v in centres(moved, "moved").items():
        torch.testing.assert_close(v, c_base[k], rtol=0, atol=0)
    other_init = weights(built("init", "--seed", "0", "--init-seed", "1"))
    assert any(not torch.equal(other_init[k], w_base[k]) for k in w_base)
    other_clusters = built("clusters", "--seed", "0", "--cluster-seed", "1")
    assert other_clusters.cfg.seed_of_clusters() == 1
    after = centres(other_clusters, "clusters")
    assert any(not torch.equal(after[k], c_base[k]) for k in c_base)


def test_an_output_folder_that_cannot_be_created_fails_before_any_work(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    assert train_cli.main(["--model", "netvlad", "--output", str(blocker / "run")]) == 2
    assert f"--output {blocker / 'run'} cannot be written: {blocker} is a file" in capsys.readouterr().err


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_a_read_only_output_folder_fails_before_any_work(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    assert train_cli.main(["--model", "netvlad", "--output", str(locked / "run")]) == 2
    assert "no permission to write" in capsys.readouterr().err


def test_runtime_without_onnxruntime_fails_before_training_naming_the_extra(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime raises ImportError
    status = train_cli.main(["--model", "netvlad", "--output", str(tmp_path / "o"), "--runtime", "torch,onnx-int8"])
    err = capsys.readouterr().err
    assert status == 2 and not (tmp_path / "o").exists()
    assert "--runtime onnx-int8" in err and "pip install 'clusvpr-zoo[onnx]'" in err and "--runtime torch" in err


def test_the_final_evaluation_runs_each_runtime_on_validation_and_test_sets(tiny_roots, tmp_path):
    pytest.importorskip("onnxruntime", reason="--runtime onnx needs the onnx extra: pip install -e '.[onnx]'")
    out = tmp_path / "run"
    assert train_cli.main(_args(tiny_roots, out, "--epochs", "1", "--test-set", f"aligned:{tiny_roots[0]}",
                                "--runtime", "torch,onnx,onnx-int8", "--calibration-images", "4")) == 0
    summary = json.loads((out / "train" / "summary.json").read_text())
    runs = summary["runtimes"]
    assert sorted(runs) == ["onnx", "onnx-int8"]  # torch's rows are final_val and test, as before
    val_name, test_name = list(runs["onnx"]["recalls"])
    assert (val_name, test_name) == ("val", "train")
    assert runs["onnx"]["recalls"][test_name] == summary["test"][test_name]  # float32 onnxruntime = eager
    assert runs["onnx"]["recalls"][val_name] == summary["final_val"]
    int8 = runs["onnx-int8"]
    assert set(int8["recalls"]) == {val_name, test_name}
    assert all(0 <= v <= 100 for row in int8["recalls"].values() for v in row.values())
    calibration = int8["facts"]["calibration"]
    assert calibration["num_images"] == 4 and calibration["cosine_to_float32_on_calibration"]["min"] > 0.9
    assert all(r["images_per_s"] > 0 for r in runs.values())
    saved = json.loads((out / "train" / "summary.json").read_text())
    assert saved["runtimes"]["onnx-int8"]["recalls"] == int8["recalls"]
    config = json.loads((out / "config.json").read_text())
    assert "onnx-int8" not in json.dumps(config.get("recalls", {}))  # the release records eager PyTorch's recalls


def test_the_run_is_finished_once_the_layout_and_the_summary_written_once_each(tiny_roots, tmp_path, monkeypatch):
    import registry
    from registry.evaluation.recall_table import recall_table
    from registry.training.state import RunFolder

    calls = {"save_pretrained": 0, "summary": 0}
    save, write = registry.VPRModel.save_pretrained, RunFolder.write_summary

    def counted_save(self, *args, **kwargs):
        calls["save_pretrained"] += 1
        return save(self, *args, **kwargs)

    def counted_write(self, summary):
        calls["summary"] += 1
        return write(self, summary)

    monkeypatch.setattr(registry.VPRModel, "save_pretrained", counted_save)
    monkeypatch.setattr(RunFolder, "write_summary", counted_write)
    out = tmp_path / "run"
    argv = _args(tiny_roots, out, "--epochs", "1", "--test-set", f"aligned:{tiny_roots[0]}")
    assert train_cli.main(argv) == 0
    assert calls == {"save_pretrained": 1, "summary": 1}
    saved = json.loads((out / "train" / "summary.json").read_text())
    assert list(saved) == ["best", "final_val", "train_seconds", "history", "test", "wall_seconds", "command"]
    assert saved["command"] == " ".join(["vpr train", *argv]) and saved["wall_seconds"] >= saved["train_seconds"]
    # the recorded recalls are those of the written model, measured again here from its files
    from registry.datasets import load_dataset

    model = registry.VPRModel.from_pretrained(str(out))
    test = load_dataset(f"aligned:{tiny_roots[0]}")
    assert recall_table(model, [test], progress=False) == saved["test"]
    config = json.loads((out / "config.json").read_text())
    assert config["recalls"] == {"val": saved["final_val"], **saved["test"]}


def _photos_csv(train_root: Path, path: Path) -> Path:
    """A CSV of one's own photos in the `image,place` form: the traversal's images, placed by file name."""
    rows = ["image,place"] + [f"{img.relative_to(path.parent).as_posix()},{img.stem}"
                              for sub in ("database", "queries") for img in sorted((train_root / sub).iterdir())]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_training_on_a_csv_of_ones_own_photos_with_place_batches(tiny_roots, tmp_path, capsys):
    pytest.importorskip("pytorch_metric_learning")
    csv_file = _photos_csv(tiny_roots[0], tiny_roots[0].parent / "photos.csv")
    out = tmp_path / "o"
    argv = _args(tiny_roots, out, "--train-set", f"images_csv:{csv_file}", "--batching", "places", "--loss",
                 "multi_similarity", "--places-per-batch", "4", "--images-per-place", "2", "--epochs", "1")
    assert train_cli.main(argv) == 0
    summary = json.loads((out / "train" / "summary.json").read_text())
    assert [r["epoch"] for r in summary["history"]] == [0, 1]
    assert (out / "model.safetensors").is_file()
    assert train_cli.main(_args(tiny_roots, tmp_path / "o2", "--train-set", f"images_csv:{csv_file}")) == 2
    assert "--batching places" in capsys.readouterr().err
