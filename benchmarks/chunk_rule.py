"""Measure what the vectorised engine's CPU chunk rule rests on: stacked vs one client at a time.

    .venv/bin/python benchmarks/chunk_rule.py        # about a minute on 2 cores

For three models, one round of 10 clients is trained by the sequential engine,
by the vectorised engine with the whole cohort in one ``vmap`` program, and by
the vectorised engine one client at a time (threads, one per core, when the model
has no dropout). Times are the median of 3 rounds after a warm-up round. The
output is the markdown table quoted in docs/performance.md.
"""

from __future__ import annotations

import statistics
import time

import torch

from fedmap.core.mask import Mask, pack
from fedmap.engines.base import RoundConfig
from fedmap.engines.sequential import SequentialEngine
from fedmap.engines.vectorized import VectorizedEngine, default_chunk
from fedmap.runs.config import config_from_dict
from fedmap.runs.experiment import prepare
from fedmap.training.train import TrainConfig

CASES = [  # (label, data, model, batch size)
    ("digits, MLP", "digits", "mlp", 16),
    ("digits, FedAvg CNN (8x8)", "digits", "cnn", 16),
    ("Fashion-MNIST, FedAvg CNN", "fashion_mnist", "cnn", 32),
]


def time_round(
    engine: object, start: torch.Tensor, mask: Mask, clients: list[int], batch: int
) -> float:
    """Median seconds of 3 rounds after one warm-up round."""
    config = RoundConfig(1, 0, TrainConfig(batch_size=batch, lr=0.05, momentum=0.9))
    engine.train_cohort(start, mask, clients, config)  # type: ignore[attr-defined]
    times = []
    for _ in range(3):
        began = time.perf_counter()
        engine.train_cohort(start, mask, clients, config)  # type: ignore[attr-defined]
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def main() -> None:
    print(
        "| model | parameters | sequential s | stacked (10 in one program) s | one per core s "
        "| auto chunk on CPU |"
    )
    print("|---|---|---|---|---|---|")
    cpu = torch.device("cpu")
    for label, data, model, batch in CASES:
        e = prepare(
            config_from_dict({"data": {"name": data, "num_clients": 10}, "model": {"name": model}})
        )
        idx = [torch.from_numpy(c.train_idx) for c in e.clients]
        x, y = e.dataset.x_train, e.dataset.y_train
        x_cl = x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x
        mask = Mask.dense(e.layout)
        start = pack(e.initial_values, mask)
        clients = list(range(10))
        args = (start, mask, clients, batch)
        seq = time_round(SequentialEngine(e.model, e.layout, x_cl, y, idx), *args)
        stacked, single = (
            time_round(VectorizedEngine(e.model, e.layout, x, y, idx, cpu, chunk=chunk), *args)
            for chunk in (10, 1)
        )
        auto = default_chunk(cpu, e.layout.numel)
        print(
            f"| {label} | {e.layout.numel:,} | {seq:.3f} | {stacked:.3f} | {single:.3f} | {auto} |"
        )
    print(f"\n{torch.get_num_threads()} torch threads, torch {torch.__version__}")


if __name__ == "__main__":
    main()
