"""Comments and docstrings of the installed packages describe what the code does now: none names a file of the
repository that is not installed with them (benchmarks, tests, docs, the results pages, the project's README or
pyproject.toml, the shared folder, a spec that is not in the tree), and none narrates the code's history."""
from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("registry", "clusvpr_plugin")
EXCLUDE: set = set()  # every package folder is checked

# files a user of the installed package does not have; a path that merely ends in one of these names (such as
# `requests/`) is not a match. README.md alone is a file of the Hub layout the package writes (the model card),
# so only the project's README is matched: "the README", "see README", a section or anchor of it, a path to it.
REPOSITORY_FILES = re.compile(
    r"(?<![\w./-])(benchmarks|tests|docs|\.ci)/"
    r"|(?-i:\bRESULTS\.md\b)|\bpyproject\.toml\b|\.\./shared\b"  # results.md is the bench's own output
    r"|\bthe README\b|\bsee README\b|/README\.md\b|README\.md(#|['\u2019]s| section)"
    r"|\bspec section\b",
    re.IGNORECASE,
)
# phrases that only ever narrate the code's history. Left out on purpose, since they also describe what happens
# at run time: bare "used to" ("re-ranking used to pick positives"), bare "the earlier" ("leaves the earlier index
# there intact"), "no longer" and "previously" (a lock no longer held, a previously saved index).
HISTORY = re.compile(
    r"\bas before\b(?!\s+(the|a|an|it|its|any|each|every|this|that)\b)"
    r"|\bused to be\b"
    r"|\bthe earlier [\w-]+( [\w-]+)? format\b"
    r"|\b(was|were) defined here\b"
    r"|\breplaces the old\b"
    r"|\(fixed\)",
    re.IGNORECASE,
)


def package_files() -> List[Path]:
    files = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            if not any(relative == e or relative.startswith(e + "/") for e in EXCLUDE):
                files.append(path)
    return files


def prose(source: str) -> Iterator[Tuple[int, str]]:
    """(line number, text) of every comment and every line of every module, class and function docstring."""
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            yield token.start[0], token.string
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                for offset, line in enumerate(first.value.value.splitlines()):
                    yield first.lineno + offset, line


def offences(pattern: re.Pattern) -> List[str]:
    found = []
    for path in package_files():
        for line, text in prose(path.read_text(encoding="utf-8")):
            match = pattern.search(text)
            if match:
                found.append(f"{path.relative_to(ROOT).as_posix()}:{line}: {match.group(0)!r} in {text.strip()!r}")
    return found


def test_the_scan_covers_the_packages():
    files = package_files()
    assert len(files) > 50
    assert ROOT / "registry" / "models" / "model.py" in files and ROOT / "clusvpr_plugin" / "cwt.py" in files
    assert ROOT / "registry" / "evaluation" / "index.py" in files


@pytest.mark.parametrize("text", [
    "# measured there (see benchmarks/RESULTS.md section 11)",
    "# tests/registry/cli/test_options.py checks it",
    "# docs/ARCHITECTURE.md lists them",
    "# from ../shared/weights",
    "# the recipe (spec section 5)",
    "# see the README",
    "# the pyproject.toml pins it",
])
def test_a_repository_file_is_caught(text):
    assert REPOSITORY_FILES.search(text)


@pytest.mark.parametrize("text", [
    "# config.json, model.safetensors, centroids.h5, pca.h5, README.md (the model card)",
    "# the retry goes through requests/urllib3",
    "# results.md beside results.json",
])
def test_a_package_fact_is_not_caught(text):
    assert not REPOSITORY_FILES.search(text)


@pytest.mark.parametrize("text", [
    "# the same rows as before", "# it used to be computed twice", "# rejects the earlier memory-mapped format",
    "# they were defined here", "# this replaces the old writer", "# ranges checked once (fixed)",
])
def test_history_is_caught(text):
    assert HISTORY.search(text)


@pytest.mark.parametrize("text", [
    "# k-reciprocal re-ranking used to pick difficult positives", "# leaves the earlier index there intact",
    "# the target is left as before the write", "# a tie keeps the earlier epoch",
])
def test_a_present_fact_is_not_caught(text):
    assert not HISTORY.search(text)


def test_no_comment_or_docstring_names_a_repository_file():
    found = offences(REPOSITORY_FILES)
    assert not found, "state the fact itself instead of pointing at a repository file:\n" + "\n".join(found)


def test_no_comment_or_docstring_narrates_history():
    found = offences(HISTORY)
    assert not found, "say what the code does now:\n" + "\n".join(found)
