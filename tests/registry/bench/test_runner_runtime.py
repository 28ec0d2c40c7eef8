"""--runtime: each model runs with each listed runtime, one row each, recorded in results.json/csv/md with its speed."""
from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
from runner_support import load_runner, markdown_rows, read_outputs, tiny_models, write_aligned_dataset

pytest.importorskip("onnxruntime", reason="--runtime onnx needs the onnx extra: pip install -e '.[onnx]'")
PLACES = 12


@pytest.fixture(scope="module")
def runtime_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("runtime_run")
    data = write_aligned_dataset(root / "data", PLACES)
    out = root / "out"
    argv = ["--untrained", "--models", "runnertest_netvlad,runnertest_gem,runnertest_clusvpr", "--datasets",
            f"aligned:{data}", "--output-dir", str(out), "--runtime", "torch,onnx,onnx-int8", "--calibration-images",
            "5", "--no-progress", "--latency-repeats", "1", "--kmeans-per-image", "16", "--recall-ns", "1,2,5",
            "--save-descriptors", "--whitening", "none"]  # a PCA fitted per run would rotate each runtime apart
    with tiny_models(), contextlib.redirect_stdout(io.StringIO()):
        runner = load_runner()
        assert runner.main(argv) == 0
    return out


def test_every_model_gets_one_row_per_runtime_with_its_own_speed(runtime_run):
    outputs = read_outputs(runtime_run)
    rows = outputs["json"]["results"]
    assert [(r["model"], r["runtime"]) for r in rows] == [
        (m, rt) for m in ("runnertest_netvlad", "runnertest_gem", "runnertest_clusvpr")
        for rt in ("torch", "onnx", "onnx-int8")]
    assert all(r["images_per_s"] > 0 and r["latency_ms"] > 0 for r in rows)
    assert outputs["json"]["meta"]["runtimes"] == ["torch", "onnx", "onnx-int8"]
    assert [r["runtime"] for r in outputs["csv"]] == [r["runtime"] for r in rows]
    assert [cells[1] for cells in markdown_rows(outputs["md"])] == [r["runtime"] for r in rows]
    assert "- Runtime: torch, onnx, onnx-int8" in outputs["md"]


def test_onnx_rows_give_the_eager_descriptors_and_int8_rows_record_their_calibration(runtime_run):
    rows = read_outputs(runtime_run)["json"]["results"]
    for model in ("runnertest_netvlad", "runnertest_gem", "runnertest_clusvpr"):
        by = {r["runtime"]: r for r in rows if r["model"] == model}
        files = {rt: np.load(runtime_run / next(f for f in by[rt]["files"] if f.endswith(".npz"))) for rt in by}
        for key in ("queries", "database"):
            torch_desc, onnx_desc = files["torch"][key], files["onnx"][key]
            assert np.abs(onnx_desc - torch_desc).max() < 1e-4  # unit vectors: 1e-4 relative
            cos = (files["onnx-int8"][key] * torch_desc).sum(1)
            assert cos.min() > 0.99, (model, key, cos.min())
        assert by["onnx"]["recall"] == by["torch"]["recall"]
        calibration = by["onnx-int8"]["runtime_facts"]["calibration"]
        assert calibration["num_images"] == 5 and calibration["images"].startswith("5 database images of")
        assert by["torch"]["runtime_facts"] == {"runtime": "torch"}


@pytest.mark.parametrize("argv, message", [
    (["--runtime", "tensorrt"], "--runtime tensorrt: unknown; choose from torch, compile, onnx, onnx-int8"),
    (["--runtime", "onnx,onnx"], "--runtime lists a runtime twice"),
    (["--runtime", "onnx", "--compile"], "with --runtime use --runtime compile instead"),
])
def test_bad_runtime_options_exit_2_naming_the_choices(argv, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        load_runner().parse_args(argv + ["--output-dir", str(tmp_path)])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
