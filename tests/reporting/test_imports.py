"""The reporting package: no import cycle, and matplotlib only to draw (layers: test_layering)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "fedmap" / "reporting"


def fedmap_imports(path: Path) -> set[str]:
    """Dotted ``fedmap.*`` modules that ``path`` imports (``from fedmap.x import y`` too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fedmap"):
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names if a.name.startswith("fedmap"))
    return names


def graph() -> dict[str, set[str]]:
    """Module of the package -> the modules of the package it imports."""
    modules = {f"fedmap.reporting.{p.stem}": p for p in PACKAGE.glob("*.py")}
    return {name: fedmap_imports(path) & set(modules) for name, path in modules.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str]:
    """One import cycle of ``edges`` (empty when there is none), by depth-first search."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = "open"
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        path.pop()
        return []

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return []


def test_the_cycle_finder_finds_a_cycle_and_accepts_a_chain():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_the_reporting_package_has_no_import_cycle():
    edges = graph()
    assert "fedmap.reporting.figures" in edges["fedmap.reporting.report"]  # the graph is real
    assert find_cycle(edges) == []


def test_reading_runs_and_writing_tables_loads_no_matplotlib():
    code = (
        "import sys, fedmap.reporting.report, fedmap.reporting.grid_write; "
        "print(any(m.startswith('matplotlib') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
