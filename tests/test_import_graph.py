"""The packages have no import cycle and the Hub layer imports no model code (docs/ARCHITECTURE.md): checked on
the source, every import statement (inside functions too), and by importing every module in a fresh interpreter."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Set

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("registry", "clusvpr_plugin")
# none are left: keep it empty
KNOWN_CYCLES: List[Set[str]] = []
# what the Hub layer may import besides itself: leaf helpers and the whitening layer (pull_pca returns one)
HUB_MAY_IMPORT = {"registry._atomic", "registry._files", "registry._jsonio", "registry.errors", "registry.h5io",
                  "registry.whitening"}


def _modules() -> Dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _import_graph(top_level_only: bool) -> Dict[str, Set[str]]:
    """module -> the package modules it imports: module-level statements only, or every import statement. Importing
    `a.b.c` runs `a.b` too, so that is an edge as well, unless the importer is inside `a.b` (which then has run
    already); importing `a.b` itself, or a name from it, is always an edge."""
    modules = _modules()
    graph: Dict[str, Set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        nodes = tree.body if top_level_only else list(ast.walk(tree))
        targets: Set[str] = set()
        for node in nodes:
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                    package = package[:len(package) - node.level + 1]
                    base = ".".join(package + ([node.module] if node.module else []))
                targets.update(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names)
        importer_packages = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
        edges = set()
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if not target:
                continue  # not a module of these packages
            edges.add(target)
            parts = target.split(".")
            edges.update(".".join(parts[:i]) for i in range(1, len(parts))
                         if ".".join(parts[:i]) in modules and ".".join(parts[:i]) not in importer_packages)
        edges.discard(name)
        graph[name] = edges
    return graph


def _cycles(graph: Dict[str, Set[str]]) -> List[Set[str]]:
    """The strongly connected components of more than one module (Tarjan), i.e. the import cycles."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[Set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_check_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_module_level_imports_form_no_cycle():
    assert _cycles(_import_graph(top_level_only=True)) == []


def test_no_import_cycle_even_through_imports_inside_functions():
    cycles = _cycles(_import_graph(top_level_only=False))
    assert [c for c in cycles if c not in KNOWN_CYCLES] == []


def test_the_hub_layer_imports_no_model_code():
    graph = _import_graph(top_level_only=False)
    hub = {m for m in graph if m == "registry.hub" or m.startswith("registry.hub.")}
    outside = {m: sorted(graph[m] - hub - HUB_MAY_IMPORT) for m in sorted(hub)}
    assert {m: deps for m, deps in outside.items() if deps} == {}


def test_every_module_imports_in_a_fresh_interpreter():
    names = sorted(m for m in _modules() if not m.endswith(".__main__"))  # __main__ runs its command
    code = f"import importlib\nfor name in {names!r}:\n    importlib.import_module(name)\nprint('ok')\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-3000:]


def _is_command_module(name: str) -> bool:
    return name == "registry.cli" or name.startswith("registry.cli.")


def test_nothing_in_the_library_imports_a_command_module():
    """The command lines (registry/cli/) sit on top: the library and the plugin never import them."""
    graph = _import_graph(top_level_only=False)
    upward = {m: sorted(d for d in deps if _is_command_module(d)) for m, deps in graph.items()
              if not _is_command_module(m)}
    assert {m: deps for m, deps in upward.items() if deps} == {}
    assert any(_is_command_module(m) for m in graph)  # the check sees the command modules
