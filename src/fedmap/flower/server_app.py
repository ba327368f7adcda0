"""The FedMap ServerApp: the same experiment, round loop and run directory as ``fedmap run``.

Run config keys (``[tool.flwr.app.config]`` or ``flwr run --run-config``):

* ``config``: path of the fedmap TOML experiment (required);
* ``set``: ``key=value`` overrides separated by ``;`` (as ``fedmap run --set``);
* ``out``: the run directory (default ``runs/<config name>-flower-<time>``);
* ``round-timeout``: seconds a round waits for replies (default 120).

The round loop is fedmap's own (:mod:`fedmap.rounds.loop`) with Flower's Grid as
its transport (:mod:`fedmap.flower.transport`). The run directory gains
``nodes.csv`` (each node's bytes, ledger beside Flower's, and the CPU seconds and
peak memory of its local round) and Flower's columns in the metrics.
``summary.json`` is written last, so its presence means success.
"""

from __future__ import annotations

import time
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedmap.errors import ConfigError
from fedmap.flower.transport import FlowerTransport
from fedmap.runs.config import dump_toml, load_config
from fedmap.runs.experiment import build_loop, build_server, prepare
from fedmap.runs.run_dir import create_run_dir
from fedmap.runs.session import run

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Build the experiment, run every round over ``grid``, write the run directory."""
    settings = context.run_config
    if not str(settings.get("config", "")):
        raise ConfigError(
            "run config: 'config' is empty; pass the absolute path of a fedmap experiment, "
            """e.g. flwr run flower_app CONNECTION --run-config 'config="/abs/exp.toml"'"""
        )
    overrides = [s.strip() for s in str(settings.get("set", "")).split(";") if s.strip()]
    config = load_config(str(settings["config"]), overrides)
    out = str(settings.get("out", "")) or (
        f"runs/{Path(str(settings['config'])).stem}-flower-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    experiment = prepare(config)
    run_dir = create_run_dir(config, Path(out))
    server = build_server(experiment)
    transport = FlowerTransport(
        server,
        grid,
        dump_toml(config),
        num_clients=len(experiment.clients),
        timeout_s=float(settings.get("round-timeout", 120.0)),  # type: ignore[arg-type]
    )
    loop = build_loop(experiment, transport, server=server)
    run(experiment, run_dir, loop=loop)
