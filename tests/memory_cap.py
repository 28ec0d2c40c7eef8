"""Memory bounds for the tests (a uniquely named module, like real_faults): code run in a fresh interpreter whose
address space may grow by at most a cap past what its setup left it (RLIMIT_AS), so an allocation sized from a
crafted file fails there with MemoryError (or kills the child) instead of passing. The child is a new process, not
a fork, because Lance's and torch's thread pools do not survive a fork."""
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
import json, resource
{setup}
with open("/proc/self/status") as fh:
    vm = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmSize:"))
resource.setrlimit(resource.RLIMIT_AS, (vm + {cap}, resource.RLIM_INFINITY))
try:
{run}
    facts = dict(raised=None, result=repr(result) if "result" in dir() else None)
except BaseException as err:
    facts = dict(raised=type(err).__name__, message=str(err)[:3000], mro=[c.__name__ for c in type(err).__mro__])
print("REPORT " + json.dumps(facts))
"""


def run_capped(setup: str, run: str, cap: int, timeout: float = 300, paths=()) -> Dict[str, Any]:
    """Run `setup` in a fresh interpreter importing this checkout (import and warm up there: threads started, a
    small file read), then the statements `run` with the address space capped at `cap` bytes past its size after
    setup. Returns {"raised": the exception's type name or None, "message", "mro"; "result": repr of a variable
    `result` that `run` set}; a child killed or ended otherwise fails the calling test."""
    code = _CHILD.format(setup=textwrap.dedent(setup), cap=int(cap),
                         run=textwrap.indent(textwrap.dedent(run).strip(), "    "))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([*map(str, paths), str(REPO), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO,
                         timeout=timeout)
    reports = [line[len("REPORT "):] for line in out.stdout.splitlines() if line.startswith("REPORT ")]
    assert out.returncode == 0 and reports, f"child failed ({out.returncode}):\n{out.stdout}\n{out.stderr[-3000:]}"
    return json.loads(reports[-1])
