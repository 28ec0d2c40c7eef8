"""docs/RELIABILITY.md stays true: every test it names exists, and every test that expects an error or injects a
fault is named in it."""
from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "RELIABILITY.md"
CITED = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")
# what marks a test that tries a bad input or a fault
MARKERS = ("pytest.raises(", "pytest.warns(", "SystemExit", "Killed", "write_under_limit(")


def _tests(path: Path) -> dict:
    source = path.read_text(encoding="utf-8")
    return {node.name: ast.get_source_segment(source, node) for node in ast.parse(source).body
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")}


def _table_rows() -> list:
    return [line for line in DOC.read_text(encoding="utf-8").splitlines()
            if line.startswith("| ") and not line.startswith(("| Input or fault", "| Defect |"))]


def test_every_test_the_table_names_exists():
    cited = [m.groups() for m in CITED.finditer(DOC.read_text(encoding="utf-8"))]
    assert len(cited) > 100
    missing = [f"{f}::{name}" for f, name in cited if not (REPO / f).is_file() or name not in _tests(REPO / f)]
    assert missing == []


def test_every_row_names_an_input_an_outcome_and_a_test():
    for row in _table_rows():
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        assert len(cells) == 3 and all(cells), row
        assert CITED.search(cells[2]), row


def test_every_test_that_tries_a_bad_input_or_a_fault_is_in_the_table():
    cited = {m.groups() for m in CITED.finditer(DOC.read_text(encoding="utf-8"))}
    unlisted = []
    for path in sorted((REPO / "tests").rglob("test_*.py")):
        rel = path.relative_to(REPO).as_posix()
        for name, source in _tests(path).items():
            if any(marker in source for marker in MARKERS) and (rel, name) not in cited:
                unlisted.append(f"{rel}::{name}")
    assert unlisted == [], "add these to docs/RELIABILITY.md"


def test_every_defect_of_the_file_sweep_has_a_row_naming_its_error_and_its_test():
    """The issue's 21 defects, each a row of the sweep's table (numbered as reported) with a named error and a
    test."""
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index("| Defect | Named error | Test |"):].split("\n\n")[0]
    numbers = [int(m.group(1)) for m in re.finditer(r"^\| (\d+)\. ", section, re.M)]
    assert numbers == list(range(1, 22))
    for row in section.splitlines()[2:]:
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        assert "Error" in cells[1] or "error" in cells[1], row
        assert CITED.search(cells[2]), row
