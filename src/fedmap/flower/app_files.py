"""The Flower App folder (``pyproject.toml`` plus two one-line modules) that ``flwr run`` packs.

Flower ships an app as a FAB built from a folder; the components only import the
ServerApp and ClientApp of the installed ``fedmap``, so no algorithm code travels in
the FAB. ``fedmap deploy local`` writes this folder into its working directory; the
repository keeps a copy in ``flower_app/`` for ``flwr run`` (a test keeps them equal).
"""

from __future__ import annotations

from pathlib import Path

PACKAGE = "fedmap_flower_app"

PYPROJECT = f"""\
# FedMap as a Flower App: `flwr run flower_app <federation> --run-config 'config="..."'`.
[project]
name = "fedmap-flower-app"
version = "0.1.0"
description = "FedMap (iterative magnitude pruning, masks computed not sent) on Flower"
license = "Apache-2.0"
dependencies = ["fedmap[flower]"]

[tool.flwr.app]
publisher = "fedmap"

[tool.flwr.app.components]
serverapp = "{PACKAGE}.server_app:app"
clientapp = "{PACKAGE}.client_app:app"

[tool.flwr.app.config]
config = ""  # absolute path of a fedmap experiment TOML on the server's machine (required)
set = ""  # overrides, "key=value; key=value" (as fedmap run --set)
out = ""  # run directory; empty: runs/<config name>-flower-<time>
round-timeout = 120.0  # seconds a round waits for replies
"""

# Flower checks components by reading the module (no import): ``app`` must be assigned.
COMPONENT = """\
\"\"\"FedMap's {what} (the installed fedmap package holds the code).\"\"\"

from fedmap.flower.{module} import app as _app

app = _app
"""

FILES = {
    "pyproject.toml": PYPROJECT,
    f"{PACKAGE}/__init__.py": '"""FedMap on Flower."""\n',
    f"{PACKAGE}/server_app.py": COMPONENT.format(what="ServerApp", module="server_app"),
    f"{PACKAGE}/client_app.py": COMPONENT.format(what="ClientApp", module="client_app"),
}


def write_app(folder: Path) -> Path:
    """Write the Flower App folder into ``folder``; return it."""
    for name, text in FILES.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return folder
