"""The runner end to end on a tiny generated dataset with tiny models: every output written and consistent."""
from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from runner_support import (
    is_png,
    load_runner,
    markdown_rows,
    read_outputs,
    runner_module,
    tiny_models,
    write_aligned_dataset,
)

import registry
from registry.bench import run as bench_run

PLACES = 12
REGISTRY_MODELS = ("runnertest_netvlad", "runnertest_gem", "runnertest_clusvpr")


def _trained_dir(path: Path) -> Path:
    """A tiny NetVLAD with centres and a fitted whitening, saved in the Hub layout with a training record."""
    torch.manual_seed(1)
    model = registry.create("runnertest_netvlad")
    descs = torch.nn.functional.normalize(torch.randn(64, 16), dim=1)
    model.aggregator.init_from_clusters(descs[:4], descs)
    model.fit_whitening(torch.nn.functional.normalize(torch.randn(20, 64), dim=1))
    return model.save_pretrained(path, training={"datasets": ["synthetic"], "recipe": "runner test"})


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One run: three registry models, a Hub-layout folder given bare and as NAME=DIR, grids, heat maps, descriptors."""
    root = tmp_path_factory.mktemp("tiny_run")
    data = write_aligned_dataset(root / "data", PLACES)
    out = root / "out"
    with tiny_models():
        folder = _trained_dir(root / "trained_netvlad")
        models = [*REGISTRY_MODELS, str(folder), f"runnertest_netvlad={folder}"]
        argv = ["--models", ",".join(models), "--datasets", f"aligned:{data}", "--output-dir", str(out),
                "--num-preds-to-save", "3", "--top-k", "3", "--save-attention", "2", "--save-descriptors",
                "--recall-ns", "1,2,5", "--no-progress", "--latency-repeats", "1", "--kmeans-per-image", "16"]
        stdout = io.StringIO()
        with contextlib.redirect_stdout(stdout):
            runner = load_runner()
            records = bench_run(runner.parse_args(argv))
    return {"out": out, "records": records, "stdout": stdout.getvalue(), "models": models, "folder": folder}


def test_every_output_file_is_written(tiny_run):
    out = tiny_run["out"]
    for name in ("results.json", "results.csv", "results.md"):
        assert (out / name).stat().st_size > 0
    for name in ("recall_at_n.png", "speed_vs_recall.png"):
        assert is_png(out / name)
    assert len(list((out / "predictions").glob("*.png"))) == len(tiny_run["models"])
    assert len(list((out / "descriptors").glob("*.npz"))) == len(tiny_run["models"])
    heat_maps = sorted((out / "attention").rglob("*.png"))
    assert len(heat_maps) == 2 * len(tiny_run["models"])
    assert all(is_png(p) for p in heat_maps + sorted((out / "predictions").glob("*.png")))
    centres = sorted((out / "centroids").glob("*.h5"))  # the k-means of the two untrained clustered models
    assert [p.name for p in centres] == ["runnertest_clusvpr__data.h5", "runnertest_netvlad__data.h5"]
    listed = {f for r in read_outputs(out)["json"]["results"] for f in r["files"]}
    written = [*(out / "predictions").glob("*.png"), *heat_maps, *(out / "descriptors").glob("*.npz"), *centres]
    assert listed == {str(p.relative_to(out)) for p in written}


def test_json_csv_and_markdown_hold_the_same_numbers(tiny_run):
    outputs = read_outputs(tiny_run["out"])
    rows, table = outputs["json"]["results"], markdown_rows(outputs["md"])
    assert [r["model"] for r in rows] == [r["model"] for r in outputs["csv"]] == [t[0] for t in table]
    for row, csv_row, cells in zip(rows, outputs["csv"], table):
        assert cells[1] == csv_row["runtime"] == row["runtime"] == "torch"
        assert cells[2] == csv_row["dataset"] == row["dataset"]
        for i, n in enumerate((1, 2, 5)):
            assert float(csv_row[f"R@{n}"]) == pytest.approx(row["recall"][str(n)])
            assert cells[4 + i] == f"{row['recall'][str(n)]:.1f}"
        assert int(csv_row["descriptor_dim"]) == row["descriptor_dim"] == int(cells[7])
        assert float(csv_row["gflops"]) == pytest.approx(row["gflops"])
        assert cells[-1] == csv_row["weights"] == row["weights"]
    assert outputs["md"].split("\n\n")[2] in tiny_run["stdout"]  # the table printed is the table written


def test_recall_agrees_with_the_saved_descriptors(tiny_run):
    out = tiny_run["out"]
    for row in read_outputs(out)["json"]["results"]:
        npz = next(f for f in row["files"] if f.endswith(".npz"))
        with np.load(out / npz) as d:
            q, db = d["queries"], d["database"]
        assert q.shape == (PLACES, row["descriptor_dim"]) and db.shape == (PLACES, row["descriptor_dim"])
        rank = np.argsort(-(q @ db.T), axis=1, kind="stable")
        for n in (1, 2, 5):  # aligned traversal, tolerance 0: query i's only positive is database image i
            expected = 100.0 * np.mean([i in rank[i, :n] for i in range(PLACES)])
            assert row["recall"][str(n)] == pytest.approx(expected)


def test_weights_column_says_where_weights_came_from(tiny_run):
    by_model = {r["model"]: r for r in tiny_run["records"]}
    assert by_model["runnertest_gem"]["weights"] == "random init"
    assert by_model["runnertest_netvlad"]["weights"] == "random init + k-means centres (untrained)"
    assert by_model["runnertest_netvlad"]["init"]["method"] == "k-means"
    for label in tiny_run["models"][3:]:
        assert by_model[label]["weights"] == f"local dir: {tiny_run['folder']}"
        assert by_model[label]["trained"] and by_model[label]["init"]["method"] == "pretrained"


def test_untrained_models_get_a_bold_warning_in_the_table_and_on_stdout(tiny_run):
    warning = f"**Warning: {', '.join(REGISTRY_MODELS)}: untrained weights"
    assert warning in read_outputs(tiny_run["out"])["md"]
    assert warning in tiny_run["stdout"]


def test_whitening_is_fitted_on_the_database_or_kept_from_the_checkpoint(tiny_run):
    by_model = {r["model"]: r for r in tiny_run["records"]}
    assert by_model["runnertest_netvlad"]["whitening"] == f"PCA 64->8 fitted on {PLACES} database descriptors"
    assert by_model["runnertest_netvlad"]["descriptor_dim"] == 8
    assert by_model[str(tiny_run["folder"])]["whitening"] == "PCA 64->8 (pretrained)"
    assert by_model["runnertest_gem"]["whitening"] == "none (model has no whitening)"


def test_parameters_and_gflops_are_counted_at_the_evaluated_size(tiny_run):
    gem = next(r for r in tiny_run["records"] if r["model"] == "runnertest_gem")
    # 64x64 input: conv 3->8 (4x4, stride 4) on 16x16 outputs, conv 8->16 (4x4, stride 4) on 4x4; 2 FLOPs per MAC
    macs = 16 * 16 * 8 * 3 * 16 + 4 * 4 * 16 * 8 * 16
    assert gem["gflops"] == pytest.approx(2 * macs / 1e9)
    assert gem["flops_input"] == gem["input_size"] == "64x64"
    assert gem["params_m"] * 1e6 == pytest.approx((3 * 8 * 16 + 8) + (8 * 16 * 16 + 16) + 1)
    for r in tiny_run["records"]:
        assert r["images_per_s"] > 0 and r["latency_ms"] > 0 and r["peak_memory_mib"] >= 0


def test_prediction_grid_borders_are_green_for_positives_and_red_otherwise(tiny_run):
    out = tiny_run["out"]
    row = next(r for r in read_outputs(out)["json"]["results"] if r["model"] == "runnertest_gem")
    with np.load(out / next(f for f in row["files"] if f.endswith(".npz"))) as d:
        top = np.argsort(-(d["queries"] @ d["database"].T), axis=1, kind="stable")[:, :3]
    grid_file = next(f for f in row["files"] if f.startswith("predictions"))
    grids = runner_module("grids")
    img = np.asarray(Image.open(out / grid_file).convert("RGB"))
    tile_w = round(grids.TILE_H * 64 / 48)
    assert img.shape[0] == 3 * (grids.TILE_H + grids.CAPTION_H + grids.GAP)
    for r, qi in enumerate((0, 6, 11)):  # 3 queries spread over 12
        for c in range(1, 4):
            pixel = img[r * (grids.TILE_H + grids.CAPTION_H + grids.GAP) + grids.CAPTION_H + 1,
                        c * (tile_w + grids.GAP) + 1]
            expected = grids.GREEN if top[qi, c - 1] == qi else grids.RED
            assert tuple(pixel) == expected


def test_sequence_recalls_are_those_of_the_saved_descriptors_and_reported(tmp_path):
    from registry.evaluation.recall import recall_from_predictions
    from registry.evaluation.sequence import SequenceSpec, sequence_rankings

    data = write_aligned_dataset(tmp_path / "data", PLACES)
    out = tmp_path / "out"
    argv = ["--models", "runnertest_gem", "--datasets", f"aligned:{data}", "--output-dir", str(out),
            "--save-descriptors", "--recall-ns", "1,2", "--sequence", "1,3", "--no-progress",
            "--latency-repeats", "1", "--kmeans-per-image", "16"]
    stdout = io.StringIO()
    with tiny_models(), contextlib.redirect_stdout(stdout):
        bench_run(load_runner().parse_args(argv))
    outputs = read_outputs(out)
    row = outputs["json"]["results"][0]
    with np.load(out / next(f for f in row["files"] if f.endswith(".npz"))) as d:
        q, db = d["queries"], d["database"]
    positives = [np.array([i]) for i in range(PLACES)]
    for length in (1, 3):
        expected = recall_from_predictions(sequence_rankings(q, db, 2, SequenceSpec(length)), positives, (1, 2))
        assert row["sequence_recall"][str(length)] == {str(n): v for n, v in expected["recall"].items()}
        assert row["sequence_ms_per_query"][str(length)] > 0
    assert "Sequence matching" in outputs["md"] and "L=3 R@1/2" in stdout.getvalue()


def test_sequences_are_skipped_on_a_dataset_not_in_route_order():
    from registry.bench.retrieval import sequence_facts
    from registry.datasets import VPRDataset

    ds = VPRDataset("shuffled", Path("."), [Path("a")], [Path("b")], [np.array([0])])
    assert sequence_facts(np.ones((1, 2), np.float32), np.ones((1, 2), np.float32), ds, (5,), (1,)) == {
        "sequence_skipped": "queries not in route order"}
