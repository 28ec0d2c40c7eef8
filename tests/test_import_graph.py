"""The packages have no import cycle, the Hub layer imports no model code, and the imports follow the layers that
docs/ARCHITECTURE.md draws (its `layers` block): checked on the source, every import statement (inside functions
too), and by importing every module in a fresh interpreter."""
from __future__ import annotations

import ast
import fnmatch
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, NamedTuple, Set

REPO = Path(__file__).resolve().parents[1]
ARCHITECTURE = REPO / "docs" / "ARCHITECTURE.md"
PACKAGES = ("registry", "clusvpr_plugin")
# none are left: keep it empty
KNOWN_CYCLES: List[Set[str]] = []
# what the Hub layer may import besides itself: leaf helpers and the whitening layer (pull_pca returns one)
HUB_MAY_IMPORT = {"registry._util", "registry._util.atomic", "registry._util.files", "registry._util.jsonio",
                  "registry.errors", "registry._util.h5io", "registry.whitening"}


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


class Layer(NamedTuple):
    name: str
    patterns: List[str]
    imports: List[str]


def _parse_layers(text: str) -> List[Layer]:
    """The fenced `layers` block: `name: pattern ... -> layer ...`, an entry per unindented line, indented lines
    continuing it; `#` starts a comment. In the order written (top layer first)."""
    block = re.search(r"^```layers\n(.*?)^```", text, re.S | re.M)
    assert block, "docs/ARCHITECTURE.md has no ```layers block"
    entries: List[str] = []
    for line in block.group(1).splitlines():
        line = line.split("#", 1)[0].rstrip()
        if not line:
            continue
        if line[0].isspace():
            assert entries, f"a continuation line before any layer: {line!r}"
            entries[-1] += " " + line.strip()
        else:
            entries.append(line)
    layers = []
    for entry in entries:
        head, arrow, imports = entry.partition("->")
        name, colon, patterns = head.partition(":")
        assert colon and arrow and name.strip() and patterns.split(), f"not `name: patterns -> layers`: {entry!r}"
        layers.append(Layer(name.strip(), patterns.split(), imports.split()))
    return layers


def _layer_disagreements(graph: Dict[str, Set[str]], layers: List[Layer]) -> Dict[str, List[str]]:
    """Everything on which the drawn layers and the import graph disagree, by kind; all lists empty when they match."""
    names = [layer.name for layer in layers]
    problems: Dict[str, List[str]] = {k: [] for k in (
        "duplicate layer", "unknown layer", "arrow up or to itself", "pattern matches no module", "module in no layer",
        "module in two layers", "import not drawn", "arrow no import uses")}
    problems["duplicate layer"] = sorted({n for n in names if names.count(n) > 1})
    position = {layer.name: i for i, layer in enumerate(layers)}
    for layer in layers:
        for target in layer.imports:
            if target not in position:
                problems["unknown layer"].append(f"{layer.name} -> {target}")
            elif position[target] <= position[layer.name]:
                problems["arrow up or to itself"].append(f"{layer.name} -> {target}")
        problems["pattern matches no module"] += [f"{layer.name}: {p}" for p in layer.patterns
                                                  if not fnmatch.filter(graph, p)]
    home: Dict[str, str] = {}
    for module in sorted(graph):
        owners = [layer.name for layer in layers if any(fnmatch.fnmatchcase(module, p) for p in layer.patterns)]
        if not owners:
            problems["module in no layer"].append(module)
        elif len(owners) > 1:
            problems["module in two layers"].append(f"{module}: {', '.join(owners)}")
        else:
            home[module] = owners[0]
    allowed = {layer.name: set(layer.imports) for layer in layers}
    used: Set[tuple] = set()
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            if module not in home or target not in home or home[module] == home[target]:
                continue
            arrow = (home[module], home[target])
            used.add(arrow)
            if arrow[1] not in allowed[arrow[0]]:
                problems["import not drawn"].append(f"{module} ({arrow[0]}) imports {target} ({arrow[1]})")
    problems["arrow no import uses"] = [f"{layer.name} -> {t}" for layer in layers for t in layer.imports
                                        if t in position and (layer.name, t) not in used]
    return problems


def test_the_layer_check_finds_every_kind_of_disagreement():
    text = ("```layers\n"
            "top:    pkg.cli pkg.cli.*   # the commands\n"
            "        -> low\n"
            "low:    pkg.core\n"
            "        -> ghost\n"
            "spare:  pkg.gone\n"
            "        -> top\n"
            "```\n")
    layers = _parse_layers("intro\n" + text)
    assert layers == [Layer("top", ["pkg.cli", "pkg.cli.*"], ["low"]), Layer("low", ["pkg.core"], ["ghost"]),
                      Layer("spare", ["pkg.gone"], ["top"])]
    graph = {"pkg.cli": {"pkg.cli.run"}, "pkg.cli.run": {"pkg.core", "pkg.extra"}, "pkg.core": set(),
             "pkg.extra": set()}
    found = _layer_disagreements(graph, layers)
    assert found["unknown layer"] == ["low -> ghost"]
    assert found["arrow up or to itself"] == ["spare -> top"]
    assert found["pattern matches no module"] == ["spare: pkg.gone"]
    assert found["module in no layer"] == ["pkg.extra"]
    assert found["import not drawn"] == [] and found["arrow no import uses"] == ["spare -> top"]
    graph["pkg.core"] = {"pkg.cli.run"}  # an import up the list, which no arrow draws
    found = _layer_disagreements(graph, layers)
    assert found["import not drawn"] == ["pkg.core (low) imports pkg.cli.run (top)"]
    twice = _layer_disagreements(graph, layers + [Layer("again", ["pkg.*"], [])])
    assert "pkg.core: low, again" in twice["module in two layers"] and twice["duplicate layer"] == []
    assert _layer_disagreements(graph, layers + [Layer("top", ["pkg.x"], [])])["duplicate layer"] == ["top"]


def test_the_drawn_layers_match_the_import_graph():
    """docs/ARCHITECTURE.md's `layers` block is the import graph: every module in one layer, every import between
    two layers drawn as an arrow down the list, and every arrow used."""
    layers = _parse_layers(ARCHITECTURE.read_text(encoding="utf-8"))
    found = _layer_disagreements(_import_graph(top_level_only=False), layers)
    assert {kind: items for kind, items in found.items() if items} == {}, (
        "docs/ARCHITECTURE.md's layers block and the imports disagree: move the module's pattern to its layer, draw "
        "the arrow (down the list only), remove an arrow no import uses, or change the import")
