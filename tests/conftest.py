"""Shared test fixtures: tiny digits configs and single-threaded torch."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

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
