"""Real write failures for the tests (a uniquely named module, like shared_paths): code run in a fresh interpreter
whose files may not grow past a size (RLIMIT_FSIZE, no root needed), so a write past it fails in the kernel with
EFBIG, as a full disk fails with ENOSPC: nothing is mocked."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Dict

REPO = Path(__file__).resolve().parents[1]

_CHILD = """
import json, resource, signal
{setup}
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else SIGXFSZ kills the process instead of failing the write
resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, resource.RLIM_INFINITY))
try:
{write}
    facts = dict(raised=None)
except BaseException as err:
    facts = dict(raised=type(err).__name__, errno=getattr(err, "errno", None), message=str(err),
                 mro=[c.__name__ for c in type(err).__mro__])
print("REPORT " + json.dumps(facts))
"""


def write_under_limit(setup: str, write: str, limit: int, timeout: float = 180) -> Dict[str, Any]:
    """Run `setup` in a fresh interpreter importing this checkout, then the statements `write` with no file of the
    process allowed to grow past `limit` bytes. Returns what `write` raised: {"raised": the exception's type name
    (None if nothing), "errno", "message", "mro": the names of its classes}."""
    code = _CHILD.format(setup=textwrap.dedent(setup), limit=int(limit),
                         write=textwrap.indent(textwrap.dedent(write).strip(), "    "))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO,
                         timeout=timeout)
    reports = [line[len("REPORT "):] for line in out.stdout.splitlines() if line.startswith("REPORT ")]
    assert out.returncode == 0 and reports, f"child failed (status {out.returncode}):\n{out.stdout}\n{out.stderr}"
    return json.loads(reports[-1])
