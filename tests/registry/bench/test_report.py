"""registry.bench.report.write_all: results.json, results.csv and results.md written as one set, with the user's
umask; a real write failure keeps all three earlier files."""
from __future__ import annotations

import csv
import errno
import json
import os
import stat
from pathlib import Path

import pytest
from real_faults import write_under_limit

from registry.bench import report
from registry.bench.report import write_all


def _record(model: str, dataset: str) -> dict:
    return {
        "model": model, "architecture": f"{model}_vgg16", "dataset": dataset, "input_size": "64x96",
        "descriptor_dim": 512, "params_m": 14.7, "gflops": 1.5, "images_per_s": 10.0, "latency_ms": 5.0,
        "peak_memory_mib": 300.0, "memory_measure": "RSS", "weights": "random init", "trained": False,
        "whitening": "none", "init": {"method": "none"}, "index": "flat", "rerank": False, "amp": False,
        "compiled": False, "num_queries": 6, "num_database": 6, "extract_s": 0.5, "recall": {1: 50.0, 5: 100.0},
    }


def _meta(command: str) -> dict:
    return {"date": "2026-12-03", "command": command, "elapsed_s": 1.0, "device": "cpu", "torch": "2", "seed": 0,
            "batch_size": 8, "num_workers": 0, "latency_repeats": 1, "memory_measure": "RSS", "index": "flat",
            "rerank": False, "datasets": [], "recall_ns": [1, 5]}


def _snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_the_three_results_files_get_the_mode_the_umask_gives_a_new_file(tmp_path):
    for mask in (0o022, 0o077):
        old = os.umask(mask)
        try:
            paths = write_all([_record("gem", "corridor")], _meta("run.py"), tmp_path / f"out{mask:o}")
        finally:
            os.umask(old)
        assert {stat.S_IMODE(p.stat().st_mode) for p in paths.values()} == {0o666 & ~mask}


def test_a_write_past_the_file_size_limit_keeps_all_three_earlier_files(tmp_path):
    out = tmp_path / "out"
    write_all([_record("gem", "corridor")], _meta("first run"), out)
    earlier = _snapshot(out)
    many = [_record(f"model{i}", "corridor") for i in range(200)]  # results.json grows past 64 KiB
    result = write_under_limit(f"""
        import json
        from pathlib import Path
        from registry.bench.report import write_all
        records = json.loads({json.dumps(json.dumps(many))})
        for r in records:
            r["recall"] = {{int(n): v for n, v in r["recall"].items()}}
    """, f"write_all(records, {_meta('second run')!r}, Path({str(out)!r}))", limit=64 * 1024)
    assert result["raised"] == "OSError" and result["errno"] == 27
    assert result["message"].startswith(f"[Errno 27] could not write {out / 'results.json'}: the file would exceed "
                                        "the file-size limit")
    assert _snapshot(out) == earlier  # the three earlier files, byte for byte, and no temporary file


def test_all_three_files_describe_the_same_records(tmp_path):
    paths = write_all([_record("gem", "corridor"), _record("netvlad", "corridor")], _meta("run.py"), tmp_path)
    assert [r["model"] for r in json.loads(paths["json"].read_text())["results"]] == ["gem", "netvlad"]
    with open(paths["csv"], newline="") as fh:
        assert [r["model"] for r in csv.DictReader(fh)] == ["gem", "netvlad"]
    md = paths["md"].read_text()
    assert "| gem | torch | corridor |" in md and "| netvlad | torch | corridor |" in md


def test_a_failure_on_the_last_file_keeps_the_two_already_written_at_their_earlier_state(tmp_path, monkeypatch):
    write_all([_record("gem", "corridor")], _meta("first run"), tmp_path)
    earlier = _snapshot(tmp_path)

    def disk_full(records, meta):  # injected where results.md's text is made, after json and csv were written
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(report, "markdown", disk_full)
    with pytest.raises(OSError, match=r"could not write .*results.md: the disk is full"):
        write_all([_record("netvlad", "corridor")], _meta("second run"), tmp_path)
    assert _snapshot(tmp_path) == earlier
