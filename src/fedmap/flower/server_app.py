"""The FedMap ServerApp: the same experiment, server and run directory as ``fedmap run``.

Run config keys (``[tool.flwr.app.config]`` or ``flwr run --run-config``):

* ``config``: path of the fedmap TOML experiment (required);
* ``set``: ``key=value`` overrides separated by ``;`` (as ``fedmap run --set``);
* ``out``: the run directory (default ``runs/<config name>-flower-<time>``);
* ``round-timeout``: seconds a round waits for replies (default 120).

The run directory gains ``nodes.csv`` (each node's bytes, ledger beside Flower's,
and the CPU seconds and peak memory of its local round) and Flower's columns in
the metrics. ``summary.json`` is written last, so its presence means success.
"""

from __future__ import annotations

import math
import statistics
import time
from pathlib import Path
from typing import Any

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedmap.core.ledger import append_csv
from fedmap.engines.simulate import RoundRecord
from fedmap.errors import ConfigError
from fedmap.flower.strategy import FLOWER_COLUMNS, FedMapFlowerStrategy, FlowerRounds, NodeCost
from fedmap.runs.config import dump_toml, load_config
from fedmap.runs.experiment import (
    build_evaluator,
    build_server,
    create_run_dir,
    loop_options,
    prepare,
    run,
)

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
    strategy = FedMapFlowerStrategy(
        build_server(experiment),
        dump_toml(config),
        num_clients=len(experiment.clients),
        timeout_s=float(settings.get("round-timeout", 120.0)),  # type: ignore[arg-type]
    )
    rounds = FlowerRounds(strategy, grid, build_evaluator(experiment), **loop_options(experiment))
    costs: list[NodeCost] = []

    def record_nodes(record: RoundRecord) -> None:
        append_csv(run_dir / "nodes.csv", rounds.costs, NodeCost)
        costs.extend(rounds.costs)

    run(
        experiment,
        run_dir,
        loop=rounds,
        extra_columns=FLOWER_COLUMNS,
        on_record=record_nodes,
        summary_extra=lambda: {"flower": summarise_nodes(costs, rounds.flower_cum)},
    )


def summarise_nodes(costs: list[NodeCost], flower_total: int) -> dict[str, Any]:
    """Per-client cost and framing over the run, for ``summary.json`` and the report."""
    answered = [c for c in costs if not math.isnan(c.cpu_s)]
    framing = [c.flower_down - c.ledger_down for c in costs]
    framing += [c.flower_up - c.ledger_up for c in answered]

    def spread(values: list[float]) -> dict[str, float]:
        if not values:
            return {}
        return {"mean": statistics.fmean(values), "max": max(values)}

    return {
        "bytes_total": flower_total,
        "framing_bytes_per_message": {
            "min": min(framing, default=0),
            "max": max(framing, default=0),
        },
        "client_cpu_s": spread([c.cpu_s for c in answered]),
        "client_train_s": spread([c.train_s for c in answered]),
        "client_peak_rss_mb": spread([c.peak_rss_mb for c in answered]),
        "client_bytes_per_round": spread([float(c.ledger_down + c.ledger_up) for c in answered]),
        "local_rounds": len(answered),
    }
