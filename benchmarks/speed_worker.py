"""One contender of benchmarks/speed.py, timed in its own process.

    python benchmarks/speed_worker.py CONTENDER WORKLOAD --rounds N --device D --out FILE.json

CONTENDER is ``vectorized`` or ``sequential`` (fedmap's round loop with that
engine), ``ceiling`` (one model, one optimiser, training each round's samples at
the cohort's combined batch: no federation at all), or ``flower`` (Flower 1.42
``run_simulation`` with its FedAvg strategy and a plain PyTorch ClientApp, see
benchmarks/flower_fedavg.py). Every federated contender trains the same model on
the same client data for the same number of steps (the ceiling sees the same
samples in K times fewer, K times larger steps); accuracy is measured once, after the
last round, and is not part of the round times.

The parent passes ``FEDMAP_BENCH_T0`` (its clock when it launched this process),
so ``startup_s`` covers interpreter start, imports, data, model and engine set-up.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

TORCH_IMPORTED = time.time()  # start-up beyond this is the contender's own

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Workload:
    """A benchmark setting (issue #5): model, clients, cohort and local SGD."""

    title: str
    data: str
    model: str
    num_clients: int
    fraction: float
    batch_size: int
    lr: float
    momentum: float

    @property
    def cohort(self) -> int:
        return round(self.num_clients * self.fraction)

    @property
    def samples_per_round(self) -> int:
        """Training samples in a round: the cohort times the (equal) client size."""
        total = 50 * self.num_clients if self.data == "synthetic_cifar" else 60_000  # FMNIST
        return self.cohort * (total // self.num_clients)


WORKLOADS = {
    "a": Workload(
        "pfl-research CIFAR-10 on generated 32x32x3 data: simple_cnn, 1,000 clients x 50, "
        "50 per round, batch 10, SGD lr 0.1",
        "synthetic_cifar",
        "simple_cnn",
        1000,
        0.05,
        10,
        0.1,
        0.0,
    ),
    "b": Workload(
        "Fashion-MNIST, FedAvg CNN, 100 clients x 600, 10 per round, batch 32, SGD lr 0.05 "
        "momentum 0.9",
        "fashion_mnist",
        "cnn",
        100,
        0.1,
        32,
        0.05,
        0.9,
    ),
}


def config_for(w: Workload, engine: str, device: str, rounds: int, chunk: int = 0) -> Any:
    """The fedmap config of workload ``w`` (dense FedAvg: the same work as Flower's FedAvg)."""
    from fedmap.runs.config import config_from_dict

    return config_from_dict(
        {
            "seed": 0,
            "rounds": rounds,
            "device": device,
            "engine": engine,
            "cohort_chunk": chunk,
            "data": {
                "name": "synthetic" if w.data == "synthetic_cifar" else w.data,
                "num_clients": w.num_clients,
                "local_test_fraction": 0.0,
            },
            "model": {"name": w.model},
            "client": {
                "fraction": w.fraction,
                "epochs": 1,
                "batch_size": w.batch_size,
                "lr": w.lr,
                "momentum": w.momentum,
            },
            "pruning": {"method": "none"},
        }
    )


CACHE = ROOT / "benchmarks" / "out" / "speed"


def dataset_for(w: Workload) -> Any:
    """Generated CIFAR-sized data for (a), 50 per client; None for (b) (Fashion-MNIST).

    Generated once (``make_synthetic``, seed 0) and kept as ``.npy`` files that
    every contender memory-maps, so generation time and its float64 temporaries
    count for no one, and Flower's processes share the pages instead of each
    holding a copy.
    """
    if w.data != "synthetic_cifar":
        return None
    from fedmap.data.datasets import Dataset, make_synthetic

    files = {k: CACHE / f"cifar_{k}.npy" for k in ("x_train", "y_train", "x_test", "y_test")}
    if not all(f.exists() for f in files.values()):
        CACHE.mkdir(parents=True, exist_ok=True)
        data = make_synthetic(0, num_train=50 * w.num_clients, num_test=10_000)
        for key, path in files.items():
            np.save(path.with_suffix(".tmp.npy"), getattr(data, key).numpy())
            path.with_suffix(".tmp.npy").rename(path)
    with warnings.catch_warnings():  # read-only pages: nothing writes into a dataset
        warnings.simplefilter("ignore", UserWarning)
        arrays = {k: torch.from_numpy(np.load(f, mmap_mode="r")) for k, f in files.items()}
    return Dataset("synthetic", num_classes=10, **arrays)


def train_flops_per_sample(model: torch.nn.Module, sample: torch.Tensor) -> float:
    """FLOPs of one forward and backward pass per sample (torch's FLOP counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = sample.repeat(8, *[1] * (sample.dim() - 1))
    counter = FlopCounterMode(display=False)
    with counter:
        model(x).sum().backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / len(x)


def run_fedmap(w: Workload, engine: str, device: str, rounds: int, chunk: int) -> dict[str, Any]:
    """fedmap's round loop with ``engine``; evaluation only after the last round."""
    from fedmap.engines.evaluation import Evaluation
    from fedmap.runs.experiment import build_loop, prepare

    experiment = prepare(config_for(w, engine, device, rounds, chunk), dataset_for(w))
    simulation = build_loop(experiment)
    evaluator = simulation.evaluator
    nan = Evaluation(math.nan, math.nan, math.nan, torch.full((w.num_clients,), math.nan))
    simulation.evaluator = _Skip(nan)  # type: ignore[assignment]
    ready = time.time()
    round_s = []
    for rnd in range(1, rounds + 1):
        start = time.perf_counter()
        simulation.step(rnd)
        _sync(experiment.device)
        round_s.append(time.perf_counter() - start)
    final = evaluator.evaluate(simulation.server.model.values)
    x = experiment.dataset.x_train[:1].to(experiment.device)
    return {
        "ready": ready,
        "round_s": round_s,
        "accuracy": final.test_accuracy,
        "engine": experiment.engine,
        "device": str(experiment.device),
        "flops_per_sample": train_flops_per_sample(experiment.model, x),
        "model_sha": _digest(simulation.server.model.values),
    }


def run_ceiling(w: Workload, device: str, rounds: int) -> dict[str, Any]:
    """One model trains each round's cohort samples, shuffled together, at batch K x B."""
    from fedmap.rounds.sampling import sample_clients
    from fedmap.runs.experiment import prepare
    from fedmap.training.evaluate import score
    from fedmap.training.train import TrainConfig, train_local

    experiment = prepare(config_for(w, "sequential", device, rounds), dataset_for(w))
    data, model, dev = experiment.dataset, experiment.model, experiment.device
    layout = torch.channels_last if data.x_train.dim() == 4 else torch.contiguous_format
    x_all = data.x_train.to(dev).contiguous(memory_format=layout)
    y_all = data.y_train.to(dev)
    train = TrainConfig(1, w.batch_size * w.cohort, w.lr, w.momentum, 0.0)
    ready = time.time()
    round_s = []
    for rnd in range(1, rounds + 1):
        start = time.perf_counter()
        cohort = sample_clients(w.num_clients, w.fraction, seed=0, round=rnd)
        index = torch.from_numpy(
            np.concatenate([experiment.clients[c].train_idx for c in cohort])
        ).to(dev)
        train_local(
            model, {}, x_all[index], y_all[index], train, torch.Generator().manual_seed(rnd)
        )
        _sync(dev)
        round_s.append(time.perf_counter() - start)
    x_test = data.x_test.to(dev).contiguous(memory_format=layout)
    accuracy = score(model, x_test, data.y_test.to(dev), batch_size=256).accuracy
    return {
        "ready": ready,
        "round_s": round_s,
        "accuracy": accuracy,
        "device": str(dev),
        "batch": train.batch_size,
    }


class _Skip:
    """Stands in for the evaluator during timed rounds (every contender evaluates once)."""

    def __init__(self, placeholder: Any) -> None:
        self.placeholder = placeholder

    def evaluate(self, values: torch.Tensor) -> Any:
        return self.placeholder


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _digest(values: torch.Tensor) -> str:
    import hashlib

    return hashlib.sha256(values.numpy().tobytes()).hexdigest()[:16]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "contender",
        help="vectorized[@CHUNK|@all] (cohort_chunk), sequential, ceiling or flower",
    )
    parser.add_argument("workload", choices=sorted(WORKLOADS))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    t0 = float(os.environ.get("FEDMAP_BENCH_T0", time.time()))
    w = WORKLOADS[args.workload]
    engine, _, chunk = args.contender.partition("@")
    if engine in ("vectorized", "sequential"):
        size = w.cohort if chunk == "all" else int(chunk or 0)  # 0: the engine's own choice
        result = run_fedmap(w, engine, args.device, args.rounds, size)
    elif engine == "ceiling":
        result = run_ceiling(w, args.device, args.rounds)
    elif engine == "flower":
        sys.path.insert(0, str(Path(__file__).parent))
        from flower_fedavg import run_flower

        result = run_flower(args.workload, args.device, args.rounds)
    else:
        parser.error(f"unknown contender {args.contender!r}")
    result["startup_beyond_torch_s"] = result["ready"] - TORCH_IMPORTED
    result["startup_s"] = result.pop("ready") - t0
    if torch.cuda.is_available():
        result["peak_cuda_bytes"] = torch.cuda.max_memory_allocated()
    args.out.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
