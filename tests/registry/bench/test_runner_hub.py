"""The runner loads `org/name@rev` models through registry.hub, from the Hub tests' stand-in server on 127.0.0.1."""
from __future__ import annotations

import contextlib
import io

import pytest
from runner_support import load_runner, tiny_models, write_aligned_dataset

import registry
from registry.bench import run as bench_run

server = pytest.importorskip("hub.server", reason="the Hub tests' stand-in server (tests/registry/hub) is not "
                             "importable")
helpers = pytest.importorskip("hub.helpers")


def test_a_pinned_hub_repo_is_evaluated_and_named_with_its_commit(tmp_path):
    data = write_aligned_dataset(tmp_path / "data", 12)
    with server.HubServer({helpers.TOKEN: "tester"}) as hub, \
            helpers.hub_environment(tmp_path / "hf_home", hub.endpoint), tiny_models():
        commit = registry.create("runnertest_gem").push_to_hub(
            "tester/runner-gem", token=helpers.TOKEN, training={"datasets": ["synthetic"], "recipe": "test"})
        runner, stdout = load_runner(), io.StringIO()
        argv = ["--models", f"tester/runner-gem@{commit}", "--datasets", f"aligned:{data}",
                "--output-dir", str(tmp_path / "out"), "--no-progress", "--latency-repeats", "1"]
        with contextlib.redirect_stdout(stdout):
            (record,) = bench_run(runner.parse_args(argv))
    assert record["architecture"] == "runnertest_gem"
    assert record["weights"] == f"hub: tester/runner-gem@{commit}" and record["trained"]
    assert "**Warning" not in stdout.getvalue()


def test_a_missing_hub_repo_fails_before_any_evaluation(tmp_path, capsys):
    data = write_aligned_dataset(tmp_path / "data", 12)
    with server.HubServer({helpers.TOKEN: "tester"}) as hub, helpers.hub_environment(tmp_path / "hf_home",
                                                                                      hub.endpoint):
        status = load_runner().main(["--models", "tester/nothing-here", "--datasets", f"aligned:{data}",
                                     "--output-dir", str(tmp_path / "out")])
    assert status == 2
    assert "'tester/nothing-here' cannot be loaded" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
