"""The runner's embedded default (CI), the retrieval options, and off-the-shelf models on local backbone weights."""
from __future__ import annotations

import contextlib
import io

import pytest
from runner_support import load_runner, markdown_rows, read_outputs, tiny_models, write_aligned_dataset
from shared_paths import VGG_WEIGHTS, need_shared

from registry.bench import run as bench_run


def _run(argv):
    """Run the runner in-process; (records, stdout)."""
    runner, stdout = load_runner(), io.StringIO()
    with contextlib.redirect_stdout(stdout):
        records = bench_run(runner.parse_args([*argv, "--no-progress", "--latency-repeats", "1"]))
    return records, stdout.getvalue()


def test_main_job_evaluates_the_released_models_on_the_embedded_data(tmp_path, capsys):
    """The README's main command at a small input: released weights, embedded Corridor + Nordland test, offline."""
    out = tmp_path / "out"
    records, stdout = _run(["--input-size", "48", "96", "--batch-size", "100", "--output-dir", str(out)])
    outputs = read_outputs(out)
    assert [(r["dataset"], r["model"]) for r in records] == [
        (d, m) for d in ("corridor", "nordland_test") for m in ("clusvpr", "netvlad", "gem")]
    for r in records:
        name = {"clusvpr": "clusvpr_vgg16", "netvlad": "netvlad_vgg16", "gem": "gem_vgg16"}[r["model"]]
        assert r["trained"] and r["weights"] == f"release {name}.nordland: bundled:{name}.nordland"
        assert r["whitening"] != "fit" and r["input_size"] == "48x96"
    sizes = {r["dataset"]: (r["num_queries"], r["num_database"]) for r in records}
    assert sizes == {"corridor": (111, 111), "nordland_test": (400, 400)}
    datasets = outputs["json"]["meta"]["datasets"]
    assert all(d["embedded"] for d in datasets) and "Milford" in datasets[0]["credit"]
    assert "untrained" not in stdout.lower() and "RANDOM weights" not in capsys.readouterr().err
    assert len(markdown_rows(outputs["md"])) == 6 and (out / "recall_at_n.png").is_file()


def test_untrained_default_runs_offline_and_says_the_models_are_untrained(tmp_path, capsys):
    out = tmp_path / "out"
    # the default models and datasets at the smallest input; big batches and 16 k-means images keep CI quick
    records, stdout = _run(["--untrained", "--input-size", "32", "32", "--batch-size", "400", "--kmeans-images",
                            "16", "--output-dir", str(out)])
    outputs = read_outputs(out)
    assert [r["model"] for r in records] == ["clusvpr", "netvlad", "gem"] * 2
    assert [r["dataset"] for r in records] == ["corridor"] * 3 + ["nordland_test"] * 3
    assert all(r["num_queries"] == 111 and r["num_database"] == 111 for r in records[:3])
    corridor = outputs["json"]["meta"]["datasets"][0]
    assert corridor["embedded"] and "Milford" in corridor["credit"]
    assert "registry/data/README.md" in outputs["md"]
    assert [r["weights"] for r in records[:3]] == ["random init + k-means centres (untrained)"] * 2 + ["random init"]
    assert "**Warning: clusvpr, netvlad, gem: untrained weights" in stdout
    assert "RANDOM weights" in capsys.readouterr().err
    # 111 database images cannot fit a 4096-d whitening: reported, not failed
    assert records[0]["whitening"] == "none (too few images: 111 <= 4096 dims)"
    assert len(markdown_rows(outputs["md"])) == 6


def test_rerank_ivfpq_and_no_whitening_reach_the_results(tmp_path):
    data = write_aligned_dataset(tmp_path / "data", 12)
    with tiny_models():
        records, _ = _run(["--models", "runnertest_gem,runnertest_netvlad", "--datasets", f"aligned:{data}",
                           "--output-dir", str(tmp_path / "out"), "--rerank", "--rerank-k1", "4", "--rerank-k2", "2",
                           "--index", "ivfpq", "--pq-nbits", "2", "--ivf-nlist", "2", "--whitening", "none",
                           "--init", "none", "--recall-ns", "1,3"])
    gem, netvlad = records
    for r in records:
        assert r["index"] == "ivfpq" and r["rerank"]
        assert set(r["recall_before_rerank"]) == set(r["exact_recall"]) == {1, 3}
    assert netvlad["whitening"] == "none (--whitening none)" and netvlad["descriptor_dim"] == 64
    assert netvlad["init"]["method"] == "none" and netvlad["weights"] == "random init"
    meta = read_outputs(tmp_path / "out")["json"]["meta"]
    assert meta["rerank"] == [4, 2, 0.3] and meta["index_options"] == {"nlist": 2, "nbits": 2, "nprobe": 16}


def test_backbone_weights_give_off_the_shelf_models(tmp_path):
    weights = need_shared(VGG_WEIGHTS)
    data = write_aligned_dataset(tmp_path / "data", 12)
    records, stdout = _run(["--untrained", "--models", "netvlad,gem", "--datasets", f"aligned:{data}",
                            "--input-size", "64", "96",
                            "--backbone-weights", str(weights), "--output-dir", str(tmp_path / "out")])
    netvlad, gem = records
    assert netvlad["weights"] == "off-the-shelf: vgg16_hed_conv.safetensors + k-means centres (untrained aggregator)"
    assert gem["weights"] == "off-the-shelf: vgg16_hed_conv.safetensors (untrained aggregator)"
    assert netvlad["init"]["num_descriptors"] == 12 * 24  # 4x6 conv5 locations per 64x96 image
    assert "**Warning: netvlad, gem: untrained weights" in stdout
    assert read_outputs(tmp_path / "out")["json"]["meta"]["backbone_weights"] == str(weights)


@pytest.mark.parametrize("layout", ["dir", "name=dir"])
def test_a_folder_without_a_training_record_is_flagged(tmp_path, layout):
    import registry

    data = write_aligned_dataset(tmp_path / "data", 12)
    with tiny_models():
        folder = registry.create("runnertest_gem").save_pretrained(tmp_path / "untrained")
        spec = str(folder) if layout == "dir" else f"runnertest_gem={folder}"
        (record,), stdout = _run(["--models", spec, "--datasets", f"aligned:{data}",
                                  "--output-dir", str(tmp_path / "out")])
    assert record["weights"] == f"local dir: {folder} (no training recorded)" and not record["trained"]
    assert "**Warning:" in stdout
