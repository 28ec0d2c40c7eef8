"""Rules of the source tree: CI lints then tests exactly as the README says, nothing edits sys.path, the scripts in
benchmarks/ use only the public API, and the core never names its plugin."""
from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Iterator, List

import pytest
from shared_paths import REPO

SOURCES = ("registry", "clusvpr_plugin", "benchmarks", "tests", "hubconf.py")


def _python_files(*roots: str) -> Iterator[Path]:
    for root in roots:
        path = REPO / root
        yield from ([path] if path.is_file() else sorted(path.rglob("*.py")))


def _imported_modules(tree: ast.AST) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def test_ci_lints_then_runs_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text().strip().splitlines()[-1]
    readme = re.search(r"Tests \(what `\.ci/run` runs.*?```bash\n(.*?)\n```", (REPO / "README.md").read_text(), re.S)
    assert readme and readme.group(1).strip() == ci
    assert "ruff check ." in ci and ci.index("ruff check .") < ci.index("pytest")
    assert "ruff" in (REPO / "pyproject.toml").read_text().split("test = [", 1)[1].split("]", 1)[0]


def test_no_module_edits_sys_path():
    offenders: List[str] = []
    for path in _python_files(*SOURCES):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr == "path" and isinstance(node.value, ast.Name) \
                    and node.value.id in ("sys", "_sys"):
                offenders.append(str(path.relative_to(REPO)))
    assert offenders == []


def _private_uses(roots, packages: str) -> dict:
    """Imports of private modules or names (`registry.models._registry`, `from registry.x import _y`) and attribute uses
    of private names on an imported package (`registry.models._registry`), per file."""
    private = re.compile(rf"^({packages})(\.\w+)*\._")
    found = {}
    for path in _python_files(*roots):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        uses = [m for m in _imported_modules(tree) if private.match(m)]
        uses += [f"{node.value.id}.{node.attr}" for node in ast.walk(tree) if isinstance(node, ast.Attribute)
                 and isinstance(node.value, ast.Name) and re.fullmatch(packages, node.value.id)
                 and node.attr.startswith("_")]
        if uses:
            found[str(path.relative_to(REPO))] = uses
    return found


def test_benchmark_scripts_import_only_public_modules():
    assert _private_uses(["benchmarks", "hubconf.py"], "registry|clusvpr_plugin") == {}


def test_the_clusvpr_plugin_uses_only_the_public_api_of_the_core_like_a_third_party_plugin():
    assert _private_uses(["clusvpr_plugin"], "registry") == {}


def _modules_imported_from(folder: Path, prefix: str) -> dict:
    """module name -> the files under `folder` that import it, for every import of `prefix` modules."""
    found: dict = {}
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else []
            for name in names:
                if name == prefix or name.startswith(prefix + "."):
                    found.setdefault(name, set()).add(path.name)
    return found


def test_the_plugin_imports_only_the_declared_plugin_surface():
    import importlib

    import registry

    used = _modules_imported_from(REPO / "clusvpr_plugin", "registry")
    assert used, "the plugin imports the core"
    outside = {m: sorted(files) for m, files in used.items() if m not in registry.PLUGIN_SURFACE}
    assert outside == {}, "import only registry.PLUGIN_SURFACE from a plugin, or declare the module there"
    for module in registry.PLUGIN_SURFACE:  # every declared module exists and imports
        importlib.import_module(module)


def test_wheels_are_ignored_and_the_stray_one_is_gone():
    assert not (REPO / "pyflakes-4.1.0-py2.py3-none-any.whl").exists()
    assert "*.whl" in (REPO / ".gitignore").read_text().split()


def test_the_core_never_names_its_plugin():
    named = [str(p.relative_to(REPO)) for p in _python_files("registry") if "clusvpr_plugin" in p.read_text("utf-8")]
    assert named == []


def test_no_extra_puts_a_second_faiss_build_beside_the_dependency():
    tomllib = pytest.importorskip("tomllib", reason="Python 3.11+ reads pyproject.toml")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    names = [re.split(r"[<>=!~ \[]", req, maxsplit=1)[0] for reqs in project["optional-dependencies"].values()
             for req in reqs]
    assert any(d.startswith("faiss-cpu") for d in project["dependencies"])
    assert not [n for n in names if n.startswith("faiss")]


def test_import_registry_is_cheap_and_its_subpackages_load_on_first_use():
    """`import registry` then `registry.datasets` / `.evaluation` / `.training` / `.bench` / `.hub`, as the README
    uses them, in a fresh interpreter; none but the Hub I/O layer (the model's own) is imported before it is used."""
    import subprocess
    import sys

    code = (
        "import sys, registry\n"
        "subs = ('bench', 'datasets', 'evaluation', 'training')  # the Hub layer is VPRModel's I/O: imported\n"
        "assert not [s for s in subs if 'registry.' + s in sys.modules], sorted(sys.modules)\n"
        "assert callable(registry.datasets.load_dataset) and callable(registry.evaluation.recall_at_n)\n"
        "assert callable(registry.training.init_clusters) and callable(registry.bench.run)\n"
        "assert callable(registry.hub.save_pretrained) and 'training' in dir(registry)\n"
        "try:\n"
        "    registry.no_such_thing\n"
        "except AttributeError as err:\n"
        "    assert 'no_such_thing' in str(err)\n"
        "else:\n"
        "    raise AssertionError('an unknown attribute did not raise')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


def test_the_model_card_template_is_one_file_shipped_as_package_data():
    """registry/data/MODEL_CARD.md is the one real file (package data: wheels and sdists carry it); the root
    MODEL_CARD.md, where readers look for it, is a link to it."""
    packaged = REPO / "registry" / "data" / "MODEL_CARD.md"
    root = REPO / "MODEL_CARD.md"
    assert packaged.is_file() and not packaged.is_symlink()
    assert root.is_symlink() and root.resolve() == packaged.resolve()
    package_data = (REPO / "pyproject.toml").read_text().split("[tool.setuptools.package-data]", 1)[1]
    assert '"data/**/*"' in package_data.split("\n")[1]
