"""FedMap's ServerApp (the installed fedmap package holds the code)."""

from fedmap.flower.server_app import app as _app

app = _app
