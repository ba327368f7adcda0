"""FedMap's ClientApp (the installed fedmap package holds the code)."""

from fedmap.flower.client_app import app as _app

app = _app
