"""Build an experiment from a :class:`Config` and run it into a run directory.

Order matters for clean failure: the config is validated and the data located
and loaded *before* the run directory is created, so a bad config or missing
data leaves nothing behind. After every round the metrics, ledger and events are
appended and a checkpoint records the state *and* the length of each of those
files, so a resumed run cuts them back to the checkpoint and continues exactly.
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import fedmap
from fedmap.client.train import TrainConfig
from fedmap.core.layout import Layout
from fedmap.core.ledger import append_csv
from fedmap.core.prune import RANDOM
from fedmap.core.schedule import Schedule
from fedmap.data.datasets import Dataset, check_dataset_available, load_dataset
from fedmap.data.partition import ClientData, partition_clients, write_partition_csv
from fedmap.engines.base import Engine
from fedmap.engines.evaluation import Evaluator
from fedmap.engines.faults import FaultModel, choose_attackers
from fedmap.engines.sequential import SequentialEngine
from fedmap.engines.simulate import Intruder, RoundLoop, RoundRecord, Simulation
from fedmap.engines.vectorized import VectorizedEngine, default_chunk, unbatchable_reason
from fedmap.errors import ConfigError
from fedmap.models import build_model, prunable_names, transmitted_names
from fedmap.runs.checkpoint import (
    Checkpoint,
    CheckpointError,
    fsync_file,
    save_checkpoint,
    write_atomic,
)
from fedmap.runs.config import Config, dump_toml
from fedmap.runs.export import save_model
from fedmap.runs.machine import machine_info
from fedmap.runs.metrics import COLUMNS, MetricsWriter, append_events, metrics_row, read_metrics
from fedmap.strategies.base import DenseStrategy, Strategy
from fedmap.strategies.feddst import FedDSTStrategy
from fedmap.strategies.fedmap import FedMapStrategy
from fedmap.strategies.gradual import GradualStrategy
from fedmap.strategies.local import LocalPruningStrategy
from fedmap.strategies.prunefl import PruneFLStrategy
from fedmap.strategies.revisions import method_revision, revision_mismatch
from fedmap.strategies.server import Server

# Files that grow by one round at a time; a checkpoint records their lengths.
ROUND_FILES = ("metrics.jsonl", "metrics.csv", "ledger.csv", "events.jsonl")


@dataclass
class Experiment:
    """Everything a run needs, built but not yet run."""

    config: Config
    device: torch.device
    dataset: Dataset
    clients: list[ClientData]
    model: torch.nn.Module
    layout: Layout
    initial_values: torch.Tensor
    engine: str = "sequential"  # the engine that runs (config.engine unless it fell back)
    notes: list[str] = field(default_factory=list)  # warnings for the user, e.g. a fallback


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def prepare(config: Config, dataset: Dataset | None = None) -> Experiment:
    """Locate and load data, partition it, build the model (nothing is written).

    ``dataset`` replaces the one ``data.name`` would load (benchmarks use it for
    generated data of a chosen size; ``data.partition`` and the rest still apply).
    """
    if dataset is None:
        path = config.data.path or None
        check_dataset_available(config.data.name, path)
        dataset = load_dataset(config.data.name, path, seed=config.seed)
    d = config.data
    clients = partition_clients(
        dataset.y_train.numpy(),
        scheme=d.partition,
        num_clients=d.num_clients,
        alpha=d.alpha,
        classes_per_client=d.classes_per_client,
        local_test_fraction=d.local_test_fraction,
        rng=np.random.default_rng([config.seed, 0xDA7A]),
    )
    with torch.random.fork_rng(devices=[]):  # initial values from the run's seed, no leak
        torch.manual_seed(config.seed)
        model = build_model(config.model.name, dataset.input_shape, dataset.num_classes)
    state = model.state_dict()
    transmitted = {name: state[name] for name in transmitted_names(model)}
    layout = Layout.from_state(transmitted, prunable_names(model))
    device = resolve_device(config.device)
    initial_values = layout.flatten(transmitted)
    model = model.to(device)
    if len(dataset.input_shape) == 3:  # images: NHWC kernels are ~1.5-2x faster on CPU
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    engine, notes = choose_engine(config, model)
    return Experiment(
        config, device, dataset, clients, model, layout, initial_values, engine, notes
    )


def choose_engine(config: Config, model: torch.nn.Module) -> tuple[str, list[str]]:
    """The engine to run and, when ``vectorized`` cannot batch the model, why it fell back."""
    if config.engine == "vectorized":
        reason = unbatchable_reason(model)
        if reason is not None:
            return "sequential", [
                f"engine: 'vectorized' cannot batch model {config.model.name!r}: {reason}; "
                "training with the sequential engine instead"
            ]
    return config.engine, []


def make_strategy(config: Config, initial_values: torch.Tensor) -> Strategy:
    """The strategy named by ``pruning.method``."""
    p = config.pruning
    schedule = Schedule(
        p.warmup_rounds,
        p.rounds_per_step,
        p.target_sparsity,
        p.trigger,
        p.patience,
        p.guard_delta,
    )
    rewind = initial_values if p.rewind else None
    if p.method == "none":
        return DenseStrategy()
    if p.method == "fedmap":
        return FedMapStrategy(schedule, p.rate, p.scope, rewind)
    if p.method == "random":  # FedMap's schedule, random instead of magnitude ranking
        return FedMapStrategy(schedule, p.rate, RANDOM, rewind, name="random")
    if p.method == "oneshot":  # one step after the warm-up, straight to the target
        return FedMapStrategy(
            schedule, p.target_sparsity, p.scope, rewind, name="oneshot", max_steps=1
        )
    if p.method == "gradual":
        return GradualStrategy(schedule, p.rate, p.scope, rewind)
    if p.method == "local":
        return LocalPruningStrategy(p.warmup_rounds, p.rounds_per_step, p.rate, p.target_sparsity)
    if p.method == "prunefl":
        return PruneFLStrategy(p.target_sparsity, p.rounds_per_step)
    if p.method == "feddst":
        return FedDSTStrategy(p.target_sparsity, p.rate, p.rounds_per_step, config.rounds)
    raise ConfigError(f"pruning.method: {p.method!r} is not implemented")


def build_server(experiment: Experiment) -> Server:
    """The protocol's server for ``experiment`` (every front door builds it here)."""
    config = experiment.config
    return Server(
        make_strategy(config, experiment.initial_values),
        experiment.layout,
        experiment.initial_values,
        dtype=config.transport.dtype,
        rule=config.aggregation.rule,
        trim_fraction=config.aggregation.trim_fraction,
        norm_threshold=config.aggregation.norm_threshold,
    )


def build_evaluator(experiment: Experiment) -> Evaluator:
    """Central test set plus every client's local test split, on the experiment's device."""
    device, data = experiment.device, experiment.dataset
    return Evaluator(
        experiment.model,
        experiment.layout,
        (_to_device(data.x_test, device), data.y_test.to(device)),
        _local_test_pool(experiment, device),
        len(experiment.clients),
    )


def build_engine(experiment: Experiment) -> Engine:
    """The engine that trains clients in this process (all of them, or one Flower node's)."""
    config, device, data = experiment.config, experiment.device, experiment.dataset
    indices = [torch.from_numpy(c.train_idx) for c in experiment.clients]
    if experiment.engine == "vectorized":  # data stays put; a round's is moved in one go
        return VectorizedEngine(
            experiment.model,
            experiment.layout,
            data.x_train,
            data.y_train,
            indices,
            device,
            chunk=config.cohort_chunk or default_chunk(device, experiment.layout.numel),
            compile=config.compile,
        )
    x_train, y_train = _to_device(data.x_train, device), data.y_train.to(device)
    return SequentialEngine(experiment.model, experiment.layout, x_train, y_train, indices)


def train_config(config: Config) -> TrainConfig:
    """Local SGD settings from the ``[client]`` section."""
    c = config.client
    return TrainConfig(c.epochs, c.batch_size, c.lr, c.momentum, c.weight_decay)


def fault_model(config: Config, num_clients: int) -> FaultModel:
    """Simulated faults, retries and attackers from the ``[faults]`` section."""
    f = config.faults
    return FaultModel(
        dropout=f.dropout,
        straggler_fraction=f.straggler_fraction,
        deadline_s=f.deadline_s,
        min_clients=f.min_clients,
        max_attempts=f.max_attempts,
        attack=f.attack,
        attackers=choose_attackers(num_clients, f.attacker_fraction, config.seed)
        if f.attack != "none"
        else frozenset(),
        attack_scale=f.attack_scale,
    )


def loop_options(experiment: Experiment) -> dict[str, Any]:
    """The round loop's keyword arguments (population, sampling, SGD, seed, faults)."""
    config, num_clients = experiment.config, len(experiment.clients)
    return {
        "num_clients": num_clients,
        "fraction": config.client.fraction,
        "train": train_config(config),
        "seed": config.seed,
        "faults": fault_model(config, num_clients),
    }


def build_simulation(experiment: Experiment, intruder: Intruder | None = None) -> Simulation:
    """Server, engine, evaluator and fault model for ``experiment``, wired into the round loop."""
    return Simulation(
        build_server(experiment),
        build_engine(experiment),
        build_evaluator(experiment),
        intruder=intruder,
        **loop_options(experiment),
    )


def run(
    experiment: Experiment,
    run_dir: Path,
    on_round: Callable[[dict[str, Any]], None] | None = None,
    *,
    checkpoint: Checkpoint | None = None,
    intruder: Intruder | None = None,
    loop: RoundLoop | None = None,
    extra_columns: tuple[str, ...] = (),
    on_record: Callable[[RoundRecord], None] | None = None,
    summary_extra: Callable[[], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Run all rounds (after ``checkpoint``'s, if given), writing the run directory as it goes.

    ``loop`` replaces the in-process simulation (the Flower app passes its own, which
    adds ``extra_columns`` to every row and does not checkpoint: a Flower run
    cannot be resumed, its clients' memory lives on their nodes). ``on_record``
    sees every round's full record; ``summary_extra`` adds keys to ``summary.json``.
    """
    config = experiment.config
    data = experiment.dataset
    write_partition_csv(
        run_dir / "partition.csv", experiment.clients, data.y_train.numpy(), data.num_classes
    )
    simulation = build_simulation(experiment, intruder) if loop is None else loop
    if checkpoint is None:
        _truncate_round_files(run_dir, dict.fromkeys(ROUND_FILES, 0))
    else:
        _restore(simulation, checkpoint, run_dir, config)
    writer = MetricsWriter(run_dir, COLUMNS + extra_columns)
    try:
        for record in simulation.run(config.rounds):
            row = metrics_row(record)
            writer.write(row)
            append_csv(run_dir / "ledger.csv", record.ledger)
            append_events(run_dir / "events.jsonl", record.events)
            due = record.round % config.checkpoint_every == 0 or record.round == config.rounds
            if due and loop is None:
                _save(simulation, run_dir, config)
            if on_record is not None:
                on_record(record)
            if on_round is not None:
                on_round(row)
    finally:
        writer.close()
    summary = summarise(read_metrics(run_dir), experiment, simulation.wall_s)
    if summary_extra is not None:
        summary.update(summary_extra())
    server = simulation.server
    final = simulation.evaluator.evaluate(server.model.values)  # the final model, per client
    write_client_accuracy(run_dir / "client_accuracy.csv", final.client_accuracy)
    save_model(
        run_dir / "model.safetensors",
        server.model.values,
        server.model.mask,
        {
            "epoch": str(server.model.epoch),
            "model": config.model.name,
            "density": repr(server.model.mask.density),
            "dtype": config.transport.dtype,
        },
    )
    write_atomic(run_dir / "summary.json", (json.dumps(summary, indent=2) + "\n").encode())
    return summary


def write_client_accuracy(path: Path, accuracy: torch.Tensor) -> None:
    """The final model's accuracy on each client's local test split (the stability claim)."""
    lines = ["client,accuracy"] + [f"{i},{float(a):.6f}" for i, a in enumerate(accuracy)]
    write_atomic(path, ("\n".join(lines) + "\n").encode())


def config_digest(config: Config) -> str:
    """SHA-256 of the resolved config: a checkpoint only resumes the run it came from."""
    return hashlib.sha256(dump_toml(config).encode()).hexdigest()


def _save(simulation: RoundLoop, run_dir: Path, config: Config) -> None:
    for name in ROUND_FILES:  # on disk before a checkpoint vouches for their lengths
        fsync_file(run_dir / name)
    tensors, meta = simulation.state_dict()
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for index, cuda_state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{index}"] = cuda_state
    kind, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)  # type: ignore[misc]
    tensors["rng.numpy"] = torch.from_numpy(np.asarray(keys).astype(np.int64))
    meta["numpy_random"] = [kind, int(pos), int(has_gauss), float(gauss)]
    meta["python_random"] = random.getstate()
    meta["offsets"] = {name: _size(run_dir / name) for name in ROUND_FILES}
    meta["config_sha256"] = config_digest(config)
    meta["method_revision"] = method_revision(config.pruning.method)
    save_checkpoint(run_dir, simulation.round, tensors, meta)


def check_config(checkpoint: Checkpoint, config: Config, run_dir: Path) -> None:
    """Refuse a checkpoint written under another config or another revision of the method.

    An edited ``config.toml`` changes the digest; a code change to the method changes
    its revision (fedmap.strategies.revisions), and finishing the run would mix the two.
    """
    if checkpoint.meta.get("config_sha256") != config_digest(config):
        raise CheckpointError(
            f"{checkpoint.path}: written by a different config than {run_dir / 'config.toml'}"
        )
    mismatch = revision_mismatch(config.pruning.method, checkpoint.meta)
    if mismatch is not None:
        raise CheckpointError(f"{checkpoint.path}: {mismatch}; start the run afresh")


def _restore(simulation: RoundLoop, checkpoint: Checkpoint, run_dir: Path, config: Config) -> None:
    meta = checkpoint.meta
    check_config(checkpoint, config, run_dir)
    simulation.load_state_dict(checkpoint.tensors, meta)
    torch.set_rng_state(checkpoint.tensors["rng.torch"])
    cuda = sorted(
        (k for k in checkpoint.tensors if k.startswith("rng.cuda.")),
        key=lambda k: int(k.rsplit(".", 1)[1]),
    )
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([checkpoint.tensors[k] for k in cuda])
    kind, pos, has_gauss, gauss = meta["numpy_random"]
    keys = checkpoint.tensors["rng.numpy"].numpy().astype(np.uint32)
    np.random.set_state((kind, keys, pos, has_gauss, gauss))
    version, internal, gauss = meta["python_random"]
    random.setstate((version, tuple(internal), gauss))
    _truncate_round_files(run_dir, meta["offsets"])


def _truncate_round_files(run_dir: Path, offsets: dict[str, int]) -> None:
    """Cut each per-round file back to ``offsets`` (0: remove it): drop rounds past a checkpoint."""
    for name in ROUND_FILES:
        path, size = run_dir / name, int(offsets.get(name, 0))
        if size == 0:
            path.unlink(missing_ok=True)
            continue
        if _size(path) < size:
            raise CheckpointError(f"{path} is shorter than its checkpoint says: it was truncated")
        with path.open("r+b") as handle:
            handle.truncate(size)


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def create_run_dir(config: Config, out: Path) -> Path:
    """Create ``out`` (refusing a non-empty one) and write the resolved config."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out: {out} exists and is not a directory")
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"--out: directory {out} exists and is not empty")
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.toml").write_text(dump_toml(config))
    return out


def summarise(rows: list[dict[str, Any]], experiment: Experiment, wall_s: float) -> dict[str, Any]:
    """The numbers a reader wants first, from the metrics rows."""
    last = rows[-1]
    dense = sum(r["bytes_dense"] for r in rows)
    return {
        "method": experiment.config.pruning.method,
        "method_revision": method_revision(experiment.config.pruning.method),
        "rounds": last["round"],
        "final_density": last["density"],
        "final_sparsity": 1.0 - last["density"],
        "prune_steps": last["iteration"],
        "final_test_accuracy": last["test_accuracy"],
        "best_test_accuracy": max(r["test_accuracy"] for r in rows),
        "final_client_acc_mean": last["client_acc_mean"],
        "final_client_acc_std": last["client_acc_std"],
        "final_client_acc_min": last["client_acc_min"],
        "bytes_total": last["bytes_cum"],
        "bytes_dense_fedavg": dense,
        "bytes_ratio_vs_dense": last["bytes_cum"] / dense if dense else math.nan,
        "bytes_bitmap": sum(r["bytes_bitmap"] for r in rows),
        "bytes_coo": sum(r["bytes_coo"] for r in rows),
        "clients_sampled": sum(r["sampled"] for r in rows),
        "clients_answered": sum(r["answered"] for r in rows),
        "clients_dropped": sum(r["dropped"] for r in rows),
        "clients_late": sum(r["late"] for r in rows),
        "replies_rejected": sum(r["rejected"] for r in rows),
        "round_retries": sum(r["attempts"] - 1 for r in rows),
        "num_parameters": experiment.layout.numel,
        "num_prunable": experiment.layout.num_prunable,
        "wall_s": round(wall_s, 2),
        "device": str(experiment.device),
        "engine": experiment.engine,
        "versions": {
            "fedmap": fedmap.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "machine": machine_info(experiment.device),
    }


def _local_test_pool(
    experiment: Experiment, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All clients' local test samples in one batch on ``device``, with each sample's owner."""
    data = experiment.dataset
    index = np.concatenate([c.test_idx for c in experiment.clients]).astype(np.int64)
    owner = np.concatenate([np.full(len(c.test_idx), i) for i, c in enumerate(experiment.clients)])
    idx = torch.from_numpy(index)
    x, y = _to_device(data.x_train[idx], device), data.y_train[idx].to(device)
    return x, y, torch.from_numpy(owner.astype(np.int64))


def _to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Move inputs to ``device``; images go channels-last to match the model."""
    x = x.to(device)
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x
