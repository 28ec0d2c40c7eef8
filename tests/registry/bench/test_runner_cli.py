"""The runner's command line: --help documents every option; bad arguments fail fast with a clear message."""
from __future__ import annotations

import subprocess
import sys

import pytest
from runner_support import BENCHMARKS, REPO, load_runner


def test_help_runs_as_a_script_and_documents_every_option():
    done = subprocess.run([sys.executable, str(BENCHMARKS / "run.py"), "--help"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: python {BENCHMARKS / 'run.py'}")  # the command as typed
    for action in load_runner().build_parser()._actions:
        assert action.help, f"{action.option_strings} has no help text"
        assert action.option_strings[0] in done.stdout
    for word in ("org/name@", "NAME=SOURCE", "embedded", "Corridor"):
        assert word in done.stdout


def test_the_runner_is_a_module_of_the_installed_package_runnable_from_any_folder(tmp_path):
    done = subprocess.run([sys.executable, "-m", "registry.cli", "bench", "--help"], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: python -m registry.cli bench") and "--models" in done.stdout
    bad = subprocess.run([sys.executable, "-m", "registry.cli", "bench", "--batch-size", "0"], capture_output=True,
                         text=True, timeout=120, cwd=tmp_path)
    assert bad.returncode == 2 and "python -m registry.cli bench: error: argument --batch-size" in bad.stderr


def test_defaults_are_the_embedded_data_at_each_models_size_and_untrained_at_a_cpu_friendly_one():
    cfg = load_runner().parse_args([])
    assert cfg.models == ("clusvpr", "netvlad", "gem") and not cfg.untrained
    assert cfg.datasets == ("corridor", "nordland_test") and cfg.embedded_default
    assert cfg.input_size is None  # the released models run at their own size
    assert load_runner().parse_args(["--untrained"]).input_size == (120, 160)
    assert cfg.recall_ns == (1, 5, 10, 20) and cfg.index == "flat" and cfg.init == "kmeans"
    assert cfg.output_dir.parts[0] == "results"


def test_named_datasets_keep_each_models_input_size_unless_one_is_given():
    run = load_runner()
    assert run.parse_args(["--datasets", "corridor"]).input_size is None
    assert run.parse_args(["--datasets", "corridor", "--input-size", "240", "320"]).input_size == (240, 320)


BAD = [
    (["--models", "clusvpr,nosuchmodel"], "unknown model 'nosuchmodel'; closest valid names"),
    (["--models", "clusvpr,clusvpr"], "lists a model twice"),
    (["--models", "gem,gem_vgg16"], "--models 'gem' and 'gem_vgg16' are the same model (gem_vgg16): list it once"),
    (["--datasets", f"corridor,vprbench:{REPO / 'registry' / 'data' / 'corridor'}"], "are the same dataset"),
    (["--datasets", "aligned:/no/such/traversal"], "/no/such/traversal does not exist"),
    (["--models", "./no/such/folder"], "neither an existing directory nor a Hub repository id"),
    (["--models", "netvlad=./no/such/folder"], "neither an existing directory nor a Hub repository id"),
    (["--models", "nosuch=org/repo"], "unknown model 'nosuch'"),
    (["--datasets", "nosuchdataset"], "--datasets 'nosuchdataset'"),
    (["--models", "gem", "--input-size", "8", "320"], "both sides must be >= 16 and <= 8192 (valid: 16..8192)"),
    (["--input-size", "16", "320"], "both sides must be >= 32 and <= 8192 (valid: 32..8192)"),  # ClusVPR's own
    (["--input-size", "240", "100000"], "--input-size 240 100000: both sides must be >= 32 and <= 8192"),
    (["--input-size", "-5", "64"], "--input-size: must be >= 1, got -5"),
    (["--input-size", "0", "64"], "--input-size: must be >= 1, got 0"),
    (["--backbone-weights", str(REPO / "pyproject.toml")], "would be ignored: every model here loads trained weights"),
    (["--input-size", "240"], "--input-size: expected 2 arguments"),
    (["--recall-ns", "1,x"], "comma-separated integers"),
    (["--recall-ns", "0,5"], "positive integers"),
    (["--batch-size", "0"], "must be >= 1"),
    (["--index", "lsh"], "invalid choice: 'lsh'"),
    (["--backbone-weights", "/no/such/weights.safetensors"], "--backbone-weights: file not found"),
    (["--data-root", "/no/such/root"], "--data-root: folder not found"),
    (["--rerank-lambda", "2"], "within 0..1"),
    (["--device", "tpu"], "--device"),
    (["--whitening", "maybe"], "invalid choice: 'maybe'"),
    # index parameters out of IndexSpec's range, refused at the start (the trust sweep: once only at the index build)
    (["--index", "ivfpq", "--pq-nbits", "99"], "--pq-nbits: IndexSpec nbits must be in 1..16, got 99"),
    (["--index", "hnsw", "--hnsw-m", "100000"], "--hnsw-m: IndexSpec hnsw_m must be in 2..512, got 100000"),
]


@pytest.mark.parametrize("argv,message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_arguments_exit_2_with_a_one_line_reason_before_any_work(argv, message, tmp_path, capsys):
    out = tmp_path / "out"
    assert load_runner().main([*argv, "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and "vpr bench: error:" in err
    assert not out.exists()


@pytest.mark.parametrize("argv,message", [b for b in BAD if b[0][0] not in ("--models", "--datasets")
                                           and "invalid choice" not in b[1] and "expected" not in b[1]
                                           and "must be >= 1" not in b[1] and "integers" not in b[1]
                                           and "would be ignored" not in b[1]])
def test_python_callers_of_run_config_get_the_command_lines_errors(argv, message, tmp_path, capsys):
    """The checks live in RunConfig.from_options: a Python caller gets the UsageError the command line reports."""
    from registry._util.options import UsageError
    from registry.bench import RunConfig, RunOptions

    parsed = load_runner().build_parser().parse_args([*argv, "--output-dir", str(tmp_path / "out")])
    with pytest.raises(UsageError) as caught:
        RunConfig.from_options(RunOptions(**vars(parsed)))
    assert message in str(caught.value)
    assert load_runner().main([*argv, "--output-dir", str(tmp_path / "out")]) == 2
    assert f"vpr bench: error: {caught.value}" in capsys.readouterr().err


def test_cuda_request_without_cuda_is_refused(capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit):
        load_runner().parse_args(["--device", "cuda"])
    assert "CUDA is not available" in capsys.readouterr().err


def test_an_output_dir_that_cannot_be_created_fails_before_any_work(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    assert load_runner().main(["--output-dir", str(blocker / "out")]) == 2
    assert f"cannot be written: {blocker} is a file, so no folder can be created" in capsys.readouterr().err


def test_a_mistyped_local_model_folder_is_not_taken_for_a_hub_repository(tmp_path, monkeypatch, capsys):
    (tmp_path / "models" / "gem_trained").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert load_runner().main(["--models", "models/gem_typo", "--output-dir", str(tmp_path / "out")]) == 2
    assert "'models/gem_typo' is not an existing directory (models/ exists here" in capsys.readouterr().err


def test_options_are_declared_once_and_python_callers_resolve_them_like_the_command_line(tmp_path):
    """RunConfig is RunOptions plus how the run started: no option is declared twice, and
    RunConfig.from_options(RunOptions(...)) gives what the same command line gives."""
    import dataclasses

    from registry.bench import RunConfig, RunOptions

    extra = {f.name for f in dataclasses.fields(RunConfig)} - {f.name for f in dataclasses.fields(RunOptions)}
    assert extra == {"embedded_default", "argv", "prog"}
    argv = ["--models", "gem", "--index", "hnsw", "--ef-search", "16", "--rerank", "--output-dir", str(tmp_path)]
    parsed = load_runner().parse_args(argv)
    built = RunConfig.from_options(RunOptions(models=("gem",), index="hnsw", ef_search=16, rerank=True,
                                              output_dir=tmp_path), argv, "vpr bench")
    assert built == parsed
    assert built.index_options == (("hnsw_m", 32), ("ef_construction", 40), ("ef_search", 16))
    assert built.rerank_params == (20, 6, 0.3) and built.datasets == ("corridor", "nordland_test")
    assert built.device == "cpu" and built.num_workers == 0 and built.embedded_default


def test_a_store_that_cannot_be_written_fails_before_any_work(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    for store, expected in ((blocker / "stores", f"--store {blocker / 'stores'} cannot be written: {blocker} is a "
                                                 "file, so no folder can be created inside it"),
                            (blocker, f"--store: {blocker} exists and is not a folder")):
        assert load_runner().main(["--store", str(store), "--output-dir", str(tmp_path / "out")]) == 2
        assert expected in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_backbone_weights_with_only_trained_models_are_refused_asking_for_untrained(tmp_path, capsys):
    weights = tmp_path / "vgg16.safetensors"
    weights.write_bytes(b"never read")
    assert load_runner().main(["--backbone-weights", str(weights), "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert (f"--backbone-weights {weights} would be ignored: every model here loads trained weights (clusvpr, "
            "netvlad, gem: a release, a repository or a folder)") in err
    assert "Add --untrained to build the registry models with these backbone weights" in err
    assert not (tmp_path / "out").exists()


def test_backbone_weights_with_built_and_loaded_models_name_the_ones_that_ignore_them(tmp_path, capsys):
    from runner_support import tiny_models, write_aligned_dataset

    import registry

    data = write_aligned_dataset(tmp_path / "data", 6)
    weights = tmp_path / "tiny.safetensors"
    weights.write_bytes(b"the tiny test backbone takes no weights")
    with tiny_models():
        registry.create("runnertest_gem").save_pretrained(tmp_path / "saved")
        status = load_runner().main(["--models", f"runnertest_gem,runnertest_gem={tmp_path / 'saved'}",
                                     "--datasets",
                                     f"aligned:{data}", "--backbone-weights", str(weights), "--output-dir",
                                     str(tmp_path / "out"), "--no-progress", "--latency-repeats", "1",
                                     "--recall-ns", "1"])
    assert status == 0
    assert (f"note: --backbone-weights tiny.safetensors is used by runnertest_gem only; runnertest_gem="
            f"{tmp_path / 'saved'} load trained weights and ignore it") in capsys.readouterr().err
