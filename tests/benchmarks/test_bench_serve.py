"""benchmarks/bench_serve.py at its smoke settings, run as the command it is: a map of 12 Nordland frames (a tiny
model) and a 600-row map of those rows plus distractors, 12 requests per concurrency 1 and 4 against a batching and
a non-batching server, kill -9 during `vpr map add` and during a query burst. Its JSON, Markdown and plot are
checked against what the maps left on disk say (counts, versions, rows)."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "bench_serve.py"
# the training tests' tiny_gem model with random weights (a plugin of tests/registry) keeps the run to minutes
SMOKE = ["--model", "tiny_gem", "--plugin", "training.tiny_vpr", "--pretrained", "false", "--map-images", "12",
         "--distractors", "600", "--requests", "12", "--concurrency", "1", "4", "--offline-batches", "1",
         "--add-images", "4", "--burst-requests", "60", "--check-queries", "3", "--level-seconds", "120",
         "--soak-seconds", "120", "--fault-seconds", "300", "--reload-seconds", "30"]

pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("fastapi", "uvicorn", "lance")),
    reason="the service benchmark needs the serve and map extras: pip install '.[map,serve]'")


def _register_tiny_models() -> None:
    """tiny_gem in this process too (the maps the run left are opened here); its register() is idempotent."""
    spec = importlib.util.spec_from_file_location("bench_serve_tiny_vpr", REPO / "tests" / "registry" / "training" /
                                                  "tiny_vpr.py")
    spec.loader.exec_module(importlib.util.module_from_spec(spec))


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    _register_tiny_models()
    work = tmp_path_factory.mktemp("bench-serve")
    out = work / "serve.json"
    path = os.pathsep.join([str(REPO / "tests" / "registry"), str(REPO), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "PYTHONPATH": path}
    run = subprocess.run([sys.executable, str(SCRIPT), *SMOKE, "--work", str(work / "work"), "--out", str(out)],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return work, json.loads(out.read_text())


def test_every_level_sent_its_requests_and_none_failed(smoke):
    _, result = smoke
    levels = [r for r in result["load"] if not r.get("soak")]
    assert sorted((r["map"], r["max_batch"], r["concurrency"]) for r in levels) == sorted(
        (m, b, c) for m in ("nordland", "600 rows") for b in (16, 1) for c in (1, 4))
    for r in levels:
        assert r["sent"] == r["ok"] + r["4xx"] + r["5xx"] + r["connection"] == 12
        assert r["ok"] == 12 and r["5xx"] == 0
        assert 0 < r["p50_ms"] <= r["p95_ms"] <= r["p99_ms"]
        assert r["requests_per_s"] == pytest.approx(r["ok"] / r["seconds"])


def test_the_soak_reads_the_servers_rss_and_the_targets_come_from_the_rows(smoke):
    _, result = smoke
    for name in ("nordland", "600 rows"):
        soak = next(r for r in result["load"] if r["map"] == name and r.get("soak"))
        assert soak["sent"] == soak["ok"] == 12 and soak["max_batch"] == 16
        assert soak["rss_before_mb"] > 50 and soak["rss_after_mb"] > 50  # a Python process holding torch
        t = result["targets"][name]
        assert t["served_c16"] is None  # concurrency 16 was not among the smoke levels
        assert t["offline_batch16"] > 0 and t["offline_batch1"] > 0 and t["runtime"] == "torch"
        assert soak["rss_before_mb"] == t["rss_before_mb"]
        assert t["rss_change_pct"] == pytest.approx(100 * (soak["rss_after_mb"] / soak["rss_before_mb"] - 1))


def test_the_distractor_map_holds_the_nordland_rows_then_distractors(smoke):
    from registry.maps import Map

    work, result = smoke
    small, big = Map.open(work / "work" / "nordland"), Map.open(work / "work" / "distractors")
    assert (small.count, big.count) == (12, 600) == (result["maps"]["nordland"]["count"],
                                                      result["maps"]["600 rows"]["count"])
    a, b = np.asarray(small.store.descriptors), np.asarray(big.store.descriptors)
    np.testing.assert_array_equal(b[:12], a)
    np.testing.assert_allclose(np.linalg.norm(b[12:], axis=1), 1.0, atol=1e-5)
    query = Map.open(work / "work" / "nordland").query([small.image_path(3)], k=1)[0][0]
    assert big.query([small.image_path(3)], k=1)[0][0].row == query.row == 3


def test_the_faults_leave_the_last_commit_served(smoke):
    from registry.maps import Map

    work, result = smoke
    add, burst = result["faults"]
    assert add["fault"].startswith("kill -9 during vpr map add") and burst["fault"].startswith("kill -9 of the server")
    assert add["add_exit"] == -9 and add["whole_version"] and add["ok"] and burst["ok"]
    assert add["served"] == {"version": add["version_after"], "count": add["count_after"]}
    assert add["count_final"] == add["count_before"] + add["added_images"] == 12 + 4
    fault_map = Map.open(work / "work" / "fault-map")  # what is on disk now is what the restarted server served
    assert (fault_map.version, fault_map.count) == (burst["version_committed"], add["count_final"])
    assert burst["served"] == {"version": fault_map.version, "count": fault_map.count}
    assert add["served_after_rerun"]["version"] == add["version_final"]  # the running server took the new commit
    # the kill came a third of the way into the burst: the requests after it found no server
    counts = burst["burst"]
    assert counts["ok"] >= 20 and counts["connection"] >= 1 and counts["ok"] + counts["connection"] == counts["sent"]
    assert counts["5xx"] == 0 and burst["answers"]["match"]


def test_the_markdown_has_the_three_tables_and_the_plot_is_a_png(smoke):
    work, result = smoke
    md = (work / "serve.md").read_text()
    tables = [t for t in md.split("\n\n") if t.startswith("|")]
    assert len(tables) == 3
    assert len(tables[0].splitlines()) == 2 + 8 and len(tables[2].splitlines()) == 2 + 2
    assert (work / "serve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
