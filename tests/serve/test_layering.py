"""Imports in swiftkit/serve run one way: no module imports one that imports it back (STYLE.md).

Function-level imports count too: a deferred import hides a circle from Python, not from a reader.
"""

from __future__ import annotations

import ast

from tests.conftest import ROOT

PACKAGE = ROOT / "swiftkit" / "serve"


def module_name(path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from pkg import submodule` depends on the submodule, not on what pkg/__init__ re-exports
                subs = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules]
                targets = subs if len(subs) == len(node.names) else [node.module, *subs]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                found.append([*stack[stack.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def test_serve_imports_have_no_cycles():
    graph = import_graph()
    assert "swiftkit.serve.routes.chat" in graph and graph["swiftkit.serve.app"]  # the walk saw the package
    assert cycles(graph) == []


def test_app_only_assembles_routes():
    """Every route handler lives in serve/routes/; app.py holds none."""
    tree = ast.parse((PACKAGE / "app.py").read_text())
    decorated = [n.name for n in ast.walk(tree) if isinstance(n, ast.AsyncFunctionDef) and n.decorator_list
                 and any(isinstance(d, ast.Call) and getattr(d.func, "attr", "") in ("get", "post") for d in n.decorator_list)]
    assert decorated == []
