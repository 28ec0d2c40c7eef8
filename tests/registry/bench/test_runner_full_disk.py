"""`vpr bench` on a full disk (a real write failure: a child whose files may not grow past a size, RLIMIT_FSIZE, so
the kernel fails the write with EFBIG as a full disk fails it with ENOSPC): one line naming the output folder and
the fix, exit status 1, no traceback, and no pointer to a results.json that was not written."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from runner_support import write_aligned_dataset

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]


BENCH_UNDER_LIMIT = """
import resource, signal, sys
from runner_support import load_runner, tiny_models
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
with tiny_models():
    main = load_runner().main
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[4]), resource.RLIM_INFINITY))
    status = main(["--models", "runnertest_gem", "--datasets", f"aligned:{sys.argv[1]}", "--output-dir", sys.argv[2],
                   "--no-progress", "--latency-repeats", "1", "--recall-ns", "1,5"])
print("STATUS", status)
"""


def test_vpr_bench_on_a_full_disk_names_the_results_that_exist_and_no_others(tmp_path):
    """The first pair's results.json cannot be written (a 1500-byte file-size limit): the message says no results
    were written. Before: 'what was written before is in results.json there', a file that did not exist."""
    data = write_aligned_dataset(tmp_path / "data", 6)
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(HERE), str(REPO), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, "-c", BENCH_UNDER_LIMIT, str(data), str(out), "unused", "1500"],
                         capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert run.returncode == 0 and "STATUS 1" in run.stdout, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    error = [line for line in run.stderr.splitlines() if ": error: " in line]
    assert len(error) == 1 and f"could not write the results to {out}" in error[0], run.stderr[-3000:]
    assert "the file would exceed the file-size limit" in error[0]
    assert not (out / "results.json").exists() and "no results were written" in error[0]
    assert "is in results.json" not in error[0]


def test_the_bench_full_disk_message_points_to_results_json_only_when_it_exists(tmp_path):
    import errno

    from registry.cli.bench import _disk_full

    err = OSError(errno.ENOSPC, "could not write results.md: the disk is full (No space left on device)")
    assert "no results were written" in _disk_full(err, tmp_path)
    (tmp_path / "results.json").write_text("{}")
    said = _disk_full(err, tmp_path)
    assert said.startswith(f"could not write the results to {tmp_path} (the disk is full): could not write results.md")
    assert f"the results written before are in {tmp_path / 'results.json'}, unchanged" in said
