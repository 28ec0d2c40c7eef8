"""`vpr export` on a full disk (a real write failure: a child whose files may not grow past a size, RLIMIT_FSIZE,
so the kernel fails the write with EFBIG as a full disk fails it with ENOSPC): one line naming the file and the fix,
exit status 1, no traceback, no file."""
from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def _vpr_under_limit(limit: int, *args: str) -> subprocess.CompletedProcess:
    def cap() -> None:  # in the child, before exec: SIG_IGN and the limit are kept across exec
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "registry.cli", *args], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=600, preexec_fn=cap)


def test_vpr_export_on_a_full_disk_prints_one_line_and_exits_1(tmp_path):
    """Before: a 40-line traceback ending in the OSError's message, exit status 1."""
    out = tmp_path / "gem.onnx"
    run = _vpr_under_limit(1 << 20, "export", "gem_vgg16", str(out), "--input-size", "64", "64", "--no-verify")
    assert run.returncode == 1, run.stderr[-3000:]
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    errors = [line for line in run.stderr.splitlines() if line.startswith("python -m registry.cli export: error:")]
    assert errors == [line for line in run.stderr.splitlines() if line.strip()], run.stderr[-3000:]
    assert len(errors) == 1 and f"could not write {out}: the file would exceed the file-size limit" in errors[0]
    assert "no gem.onnx was written and no partial file is left" in errors[0]
    assert not out.exists() and list(tmp_path.iterdir()) == []

