"""Shared test fixtures: tiny digits configs and runs, and single-threaded torch."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

# A FedMap run that really prunes: dense round 1, then one step per round at rate 0.2.
TINY_TOML = """\
seed = {seed}
rounds = {rounds}
device = "cpu"

[data]
name = "digits"
num_clients = {num_clients}

[model]
name = "mlp"

[client]
fraction = {fraction}
batch_size = 32

[pruning]
method = "fedmap"
warmup_rounds = 1
rounds_per_step = 1
target_sparsity = 0.5
rate = 0.2
"""


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Tiny models train several times faster on one thread than on two busy cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def write_tiny(tmp_path: Path) -> Callable[..., Path]:
    """Return ``write(name, seed=, rounds=, num_clients=, fraction=) -> Path`` for a tiny config."""

    def write(
        name: str = "tiny.toml",
        *,
        seed: int = 0,
        rounds: int = 3,
        num_clients: int = 5,
        fraction: float = 0.4,
    ) -> Path:
        path = tmp_path / name
        text = TINY_TOML.format(
            seed=seed, rounds=rounds, num_clients=num_clients, fraction=fraction
        )
        path.write_text(text)
        return path

    return write


# The same kind of run as a dict, for in-process runs (``run_tiny``).
TINY: dict[str, Any] = {
    "seed": 3,
    "rounds": 6,
    "data": {"name": "digits", "num_clients": 8},
    "model": {"name": "mlp"},
    "client": {"fraction": 0.5, "batch_size": 16, "lr": 0.1, "momentum": 0.5},
    "pruning": {"warmup_rounds": 1, "rounds_per_step": 1, "target_sparsity": 0.6, "rate": 0.2},
}


def _tiny_config(**overrides: Any) -> Any:
    """The TINY config with ``section__field=value`` (or ``field=value``) overrides."""
    from fedmap.runs.config import config_from_dict

    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in TINY.items()}
    for key, value in overrides.items():
        if "__" in key:
            section, name = key.split("__")
            raw.setdefault(section, {})[name] = value
        else:
            raw[key] = value
    return config_from_dict(raw)


@pytest.fixture
def tiny_config() -> Callable[..., Any]:
    """Return ``build(**overrides) -> Config``: TINY with ``section__field=value`` overrides."""
    return _tiny_config


@pytest.fixture
def without_wall() -> Callable[[list[dict[str, Any]]], list[dict[str, Any]]]:
    """Return a function dropping ``wall_s``, the one column a rerun may change (invariant 6)."""
    return lambda rows: [{k: v for k, v in r.items() if k != "wall_s"} for r in rows]


@pytest.fixture
def run_tiny(tmp_path: Path) -> Callable[..., tuple[Any, dict[str, Any], list[dict[str, Any]]]]:
    """Return ``run(name, **overrides) -> (experiment, summary, rows)`` in ``tmp_path/name``."""
    from fedmap.runs.experiment import prepare
    from fedmap.runs.session import run as run_experiment

    def run(name: str, **overrides: Any) -> tuple[Any, dict[str, Any], list[dict[str, Any]]]:
        out = tmp_path / name
        out.mkdir()
        experiment = prepare(_tiny_config(**overrides))
        summary = run_experiment(experiment, out)
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        return experiment, summary, rows

    return run


@pytest.fixture
def over_loopback() -> Callable[..., tuple[Any, list[dict[str, Any]]]]:
    """Return ``run(config_path, out, nodes, dense=0, **run_config) -> (grid, rows)``.

    The real ServerApp and ClientApps over Flower's in-process loopback grid (Flower's
    serialisation, no sockets): node ``100 + i`` holds partition ``i % nodes``, the
    last ``dense`` nodes run the plain dense Flower client.
    """
    pytest.importorskip("flwr", reason="the fedmap[flower] extra is not installed")
    from flwr.app import Context, RecordDict

    from fedmap.flower import client_app
    from fedmap.flower.loopback import LoopbackGrid
    from fedmap.flower.server_app import main as server_main

    def run(
        config_path: Path, out: Path, nodes: int, dense: int = 0, **run_config: Any
    ) -> tuple[Any, list[dict[str, Any]]]:
        apps = {100 + i: client_app.app for i in range(nodes + dense)}
        configs: dict[int, Any] = {
            100 + i: {"partition-id": i % nodes, "fedmap-dense": "true" if i >= nodes else "false"}
            for i in range(nodes + dense)
        }
        settings = {"config": str(config_path), "out": str(out), **run_config}
        grid = LoopbackGrid(apps, configs, settings)
        context = Context(
            run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=settings
        )
        server_main(grid, context)
        lines = (out / "metrics.jsonl").read_text().splitlines()
        return grid, [json.loads(line) for line in lines]

    return run
