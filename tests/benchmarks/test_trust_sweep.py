"""benchmarks/trust_sweep.py --quick, run as the command it is: a few mutated copies of every kind of artefact the
zoo reads (model folders, a map store, saved indexes, a runtime file, a map, images), bad search and command-line
values, mutated uploads and form fields sent to the localization service, and mutated images and places CSVs added
to a map, each in a capped child. No case may be silent, raw, unbounded, insecure or loss, and
the Markdown it writes is the table its JSON gives."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "trust_sweep.py"

pytestmark = pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in ("lance", "onnx", "onnxruntime",
                                                                                   "fastapi")),
                                reason="the sweep needs the map, onnx and serve extras: pip install "
                                       "'.[map,onnx,serve]'")


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH",
                                                                                                      "")]))
    run = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out", str(out)], capture_output=True, text=True,
                         env=env, cwd=REPO / "benchmarks", timeout=1800)
    return run, out


def test_the_quick_sweep_finds_no_silent_raw_unbounded_insecure_or_loss_case(quick):
    run, out = quick
    doc = json.loads((out / "trust_sweep.json").read_text())
    bad = [f"{c['id']} {c['label']}: {c['outcome']} ({c['message'][:120]})" for c in doc["cases"]
           if c["outcome"] in ("silent", "raw", "unbounded", "insecure", "loss")]
    assert bad == [], run.stdout[-3000:]
    assert run.returncode == 0, run.stderr[-3000:]
    surfaces = {c["surface"] for c in doc["cases"]}
    assert surfaces == {"model", "store", "index", "runtime", "map", "image", "values", "serve", "map_add"}
    assert doc["settings"]["cases_generated"] >= 1400 and len(doc["cases"]) >= 50
    for surface in ("serve", "map_add"):  # the uploads and the adds: a few of each, refused ones among them
        mine = [c for c in doc["cases"] if c["surface"] == surface]
        assert len(mine) >= 5 and any(c["outcome"] == "named" for c in mine), mine
    named = [c for c in doc["cases"] if c["outcome"] == "named"]
    assert len(named) >= len(doc["cases"]) // 2 and all(c["message"] for c in named)


def test_the_page_table_is_the_one_its_json_gives(quick):
    _, out = quick
    doc = json.loads((out / "trust_sweep.json").read_text())
    text = (out / "trust_sweep.md").read_text()
    totals = {o: sum(row[o] for row in doc["summary"].values()) for o in ("named", "same")}
    row = next(line for line in text.splitlines() if line.startswith("| **all**"))
    cells = [c.strip() for c in row.split("|")]
    assert cells[2] == f"**{totals['named']}**" and cells[3] == f"**{totals['same']}**"
    assert sum(sum(r.values()) for r in doc["summary"].values()) == len(doc["cases"])
