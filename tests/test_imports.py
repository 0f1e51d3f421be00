"""The package's import graph: no cycle anywhere, and no room that imports a room above it.

Every `import` statement in fogreid/ counts, including the ones inside functions (lazy
imports still tie two modules together). Importing `a.b.c` is an edge to module `a.b.c`, not
to its parent packages, whose faces import nothing (see fogreid/_lazy.py).
"""

from __future__ import annotations

import ast
from pathlib import Path

import fogreid

ROOT = Path(fogreid.__file__).parent


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                # `from pkg import mod` imports the module pkg.mod; `from mod import name` imports mod
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for w in graph[todo.pop()] - seen:
            seen.add(w)
            todo.append(w)
    return seen


def test_graph_is_read():
    graph = import_graph()
    assert "fogreid.model.checkpoint" in graph["fogreid.model.fused"]
    assert "fogreid.onnx_graph" in graph["fogreid.export.exporter"]


def test_no_import_cycle():
    found = cycles(import_graph())
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_runtime_never_imports_train():
    graph = import_graph()
    for name in (n for n in graph if n.startswith("fogreid.runtime")):
        bad = sorted(m for m in reachable(graph, name) if m.startswith("fogreid.train"))
        assert not bad, f"{name} imports {bad}"


def test_lower_rooms_do_not_import_upper_ones():
    """model and data sit below everything; onnx_graph below export, calibration and validate."""
    graph = import_graph()
    upper = ("fogreid.train", "fogreid.export", "fogreid.calibration", "fogreid.runtime",
             "fogreid.validate", "fogreid.cli", "fogreid.demo")
    for name in graph:
        if name.startswith(("fogreid.model", "fogreid.data", "fogreid.onnx_graph")):
            bad = sorted(m for m in graph[name] if m.startswith(upper))
            assert not bad, f"{name} imports {bad}"


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The same edges between fogreid's subpackages and top-level modules (fogreid.runtime,
    fogreid.sessions, ...), imports inside functions included."""
    def room(module: str) -> str:
        return ".".join(module.split(".")[:2])

    rooms: dict[str, set[str]] = {}
    for name, targets in graph.items():
        rooms.setdefault(room(name), set()).update(room(t) for t in targets if room(t) != room(name))
    return rooms


def test_no_cycle_between_subpackages():
    """calibration -> validate -> runtime -> export -> calibration was one, hidden in functions:
    ONNX Runtime sessions and TensorRT version knowledge now live on the ground floor
    (fogreid/sessions.py, fogreid/tensorrt_version.py) and per-layer sensitivity in calibration."""
    rooms = package_graph(import_graph())
    found = cycles(rooms)
    assert not found, "cycles between subpackages: " + "; ".join(" <-> ".join(c) for c in found)
    for ground in ("fogreid.sessions", "fogreid.tensorrt_version"):
        assert rooms[ground] <= {"fogreid.errors"}, (ground, rooms[ground])
    assert "fogreid.validate" not in rooms["fogreid.calibration"]
    assert "fogreid.export" not in rooms["fogreid.runtime"]


def test_no_function_over_120_lines():
    """Code a newcomer reads top to bottom: orchestrators call one function per job."""
    long = []
    for path in ROOT.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 120:
                long.append(f"{path.relative_to(ROOT.parent)}:{node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert not long, long
