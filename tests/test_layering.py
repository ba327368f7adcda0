import ast
import pathlib
import subprocess
import sys

SRC = pathlib.Path(__file__).resolve().parents[1] / "src" / "fedmap"
# each layer may import only itself and the layers listed for it (DESIGN.md section 4)
ALLOWED = {
    "core": {"core", "errors"},
    "client": {"core", "client", "errors"},
    "data": {"data", "errors"},
    "models": {"models", "errors"},
    "strategies": {"core", "client", "strategies", "errors"},  # client: ClientTask
    "engines": {"core", "client", "data", "models", "strategies", "engines", "errors"},
    # flower builds the run directory with runs/ (one writer for every front door)
    "flower": {
        "core",
        "client",
        "data",
        "models",
        "strategies",
        "engines",
        "runs",
        "flower",
        "errors",
    },
}


def imported_fedmap_layers(path: pathlib.Path) -> set[str]:
    layers = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fedmap."):
            layers.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("fedmap."):
                    layers.add(alias.name.split(".")[1])
    return layers


def test_layers_import_only_layers_below_them():
    for layer, allowed in ALLOWED.items():
        for path in (SRC / layer).rglob("*.py"):
            bad = imported_fedmap_layers(path) - allowed
            assert not bad, f"{path.relative_to(SRC)} imports {bad}"


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
