"""The runner under faults: a failing (model, dataset) pair is reported while the rest still run, and results are
on disk after every pair, so a crash or a kill loses only the pair in progress."""
from __future__ import annotations

import json

import pytest
from runner_support import load_runner, read_outputs, runner_module, tiny_models, write_aligned_dataset

FAST = ["--no-progress", "--latency-repeats", "1", "--kmeans-per-image", "16", "--recall-ns", "1,5"]


class Killed(BaseException):
    """Stands in for a SIGKILL: not an Exception, so nothing may catch it."""


@pytest.fixture(scope="module")
def two_datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("runner_faults")
    good, bad = write_aligned_dataset(root / "good", 6), write_aligned_dataset(root / "bad", 6)
    (bad / "queries" / "place003.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    return good, bad


def test_a_failing_pair_is_reported_the_rest_still_run_and_the_exit_status_is_1(two_datasets, tmp_path, capsys):
    good, bad = two_datasets
    out = tmp_path / "out"
    with tiny_models():
        status = load_runner().main(["--models", "runnertest_gem,runnertest_netvlad", "--datasets",
                                     f"aligned:{bad},aligned:{good}", "--output-dir", str(out), *FAST])
    assert status == 1
    err = capsys.readouterr().err
    assert "2 of 4 (model, dataset) pairs failed" in err and "place003.png" in err
    outputs = read_outputs(out)
    assert [(r["model"], r["dataset"]) for r in outputs["json"]["results"]] == [
        ("runnertest_gem", "good"), ("runnertest_netvlad", "good")]
    failed = outputs["json"]["meta"]["failed"]
    assert [(f["model"], f["dataset"]) for f in failed] == [("runnertest_gem", "bad"), ("runnertest_netvlad", "bad")]
    assert all("place003.png" in f["error"] for f in failed)
    assert [r["dataset"] for r in outputs["csv"]] == ["good", "good"]
    assert "**Failed: 2 (model, dataset) pair(s)" in outputs["md"] and "runnertest_gem on bad" in outputs["md"]


def test_results_are_written_after_each_pair_so_a_kill_keeps_the_finished_ones(two_datasets, tmp_path, monkeypatch):
    good, _ = two_datasets
    out = tmp_path / "out"
    evaluate_module = runner_module("evaluate")
    real, calls = evaluate_module.evaluate, []

    def killed_in_the_second_pair(*args, **kwargs):
        calls.append(args[0].label)
        if len(calls) == 2:
            raise Killed()
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluate_module, "evaluate", killed_in_the_second_pair)
    with tiny_models(), pytest.raises(Killed):
        load_runner().main(["--models", "runnertest_gem,runnertest_netvlad", "--datasets", f"aligned:{good}",
                            "--output-dir", str(out), *FAST])
    saved = json.loads((out / "results.json").read_text())
    assert [r["model"] for r in saved["results"]] == ["runnertest_gem"]
    assert [r["model"] for r in read_outputs(out)["csv"]] == ["runnertest_gem"]
    assert not list(out.glob(".*.tmp"))


def test_every_pair_failing_still_writes_the_report(two_datasets, tmp_path):
    _, bad = two_datasets
    out = tmp_path / "out"
    with tiny_models():
        assert load_runner().main(["--models", "runnertest_gem", "--datasets", f"aligned:{bad}",
                                   "--output-dir", str(out), *FAST]) == 1
    outputs = read_outputs(out)
    assert outputs["json"]["results"] == [] and len(outputs["json"]["meta"]["failed"]) == 1
    assert outputs["csv"] == [] and "R@5" in (out / "results.csv").read_text().splitlines()[0]
