"""The architecture, enforced: each layer imports only the layers below it (docs/design.md §4).

Imports inside ``if TYPE_CHECKING:`` blocks are annotations only and do not count
(a method names the config type it is built from, without importing the layer).
"""

import ast
import pathlib
import subprocess
import sys

SRC = pathlib.Path(__file__).resolve().parents[1] / "src" / "fedmap"
# Bottom first, as docs/design.md §4.1: each layer may import only the layers before it. A
# layer is a package or a top-level module; "fedmap" itself (the version) is below them all.
ORDER = (
    "errors",
    "core",
    "training",
    "data",
    "models",
    "methods",
    "protocol",
    "engines",
    "rounds",
    "runs",
    "flower",
    "reporting",
    "terminal",
    "cli",
    "__main__",
)


def layer_of(path: pathlib.Path) -> str:
    parts = path.relative_to(SRC).parts
    return parts[0] if len(parts) > 1 else path.stem


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node outside ``if TYPE_CHECKING:`` blocks."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(child) for stmt in node.body for child in ast.walk(stmt)}
    return [node for node in ast.walk(tree) if id(node) not in skipped]


def imports(path: pathlib.Path) -> list[tuple[str, list[str]]]:
    """(layer, imported names) of every runtime import of fedmap in ``path``.

    ``from fedmap import x`` imports layer ``x``; ``import fedmap`` the package root
    (layer ``"fedmap"``); a relative import is reported as layer ``"relative"``.
    """
    found: list[tuple[str, list[str]]] = []
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            names = [alias.name for alias in node.names]
            if node.level:
                found.append(("relative", names))
            elif node.module == "fedmap":
                found += [(name, []) for name in names]
            elif node.module and node.module.startswith("fedmap."):
                found.append((node.module.split(".")[1], names))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "fedmap" or alias.name.startswith("fedmap."):
                    found.append((alias.name.split(".")[1] if "." in alias.name else "fedmap", []))
    return found


def test_every_package_and_module_has_a_place_in_the_layers():
    layers = {layer_of(p) for p in SRC.rglob("*.py")} - {"__init__"}
    assert layers <= set(ORDER), layers - set(ORDER)


def test_layers_import_only_layers_below_them():
    for path in SRC.rglob("*.py"):
        layer = layer_of(path)
        below = set(ORDER[: ORDER.index(layer)]) if layer in ORDER else set()
        for used, _ in imports(path):
            ok = used in below or used in (layer, "fedmap")
            assert ok, f"{path.relative_to(SRC)} imports {used} (layer {layer})"


def test_the_layering_check_sees_every_form_of_import(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from typing import TYPE_CHECKING\n"
        "from fedmap import cli\nimport fedmap.runs.session\nfrom . import sibling\n"
        "if TYPE_CHECKING:\n    from fedmap.flower import transport\n"
    )
    assert [used for used, _ in imports(sample)] == ["cli", "runs", "relative"]


def test_no_private_name_is_imported_from_another_package():
    for path in SRC.rglob("*.py"):
        for used, names in imports(path):
            if used == layer_of(path):
                continue
            private = [n for n in names if n.startswith("_")]
            assert not private, f"{path.relative_to(SRC)} imports {private} from {used}"


def test_core_loads_without_flower_or_the_cli():
    code = (
        "import sys, fedmap.core.prune, fedmap.core.codec, fedmap.core.ledger; "
        "print(any(m.startswith(('flwr', 'typer', 'rich', 'fedmap.runs')) for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_only_the_flower_package_imports_flwr():
    for path in SRC.rglob("*.py"):
        if path.relative_to(SRC).parts[0] == "flower":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            assert not any(n == "flwr" or n.startswith("flwr.") for n in names), path


def test_the_cli_starts_without_loading_flower():
    code = "import sys, fedmap.cli; print(any(m.startswith('flwr') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
