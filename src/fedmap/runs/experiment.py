"""The composition root: a :class:`Config` becomes data, a model and the objects that run it.

Order matters for clean failure: the config is validated and the data located
and loaded *before* anything is written (:func:`prepare`). Every front door
builds its parts here: the simulator (:func:`build_loop` over the in-process
transport), the Flower ServerApp (its own transport, the same server and
evaluator) and each Flower node (:func:`build_engine` for its one client).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from fedmap.core.layout import Layout
from fedmap.data.datasets import Dataset, check_dataset_available, load_dataset
from fedmap.data.partition import ClientData, partition_clients
from fedmap.engines.base import Engine
from fedmap.engines.evaluation import Evaluator
from fedmap.engines.sequential import SequentialEngine
from fedmap.engines.vectorized import VectorizedEngine, default_chunk, unbatchable_reason
from fedmap.methods.registry import build_method
from fedmap.models import build_model, prunable_names, transmitted_names
from fedmap.protocol.server import Server
from fedmap.rounds.faults import FaultModel, choose_attackers
from fedmap.rounds.inprocess import InProcessTransport, Intruder
from fedmap.rounds.loop import RoundLoop
from fedmap.rounds.transport import Transport
from fedmap.runs.config import Config
from fedmap.training.train import TrainConfig


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


def build_server(experiment: Experiment) -> Server:
    """The protocol's server for ``experiment`` (every front door builds it here)."""
    config = experiment.config
    return Server(
        build_method(config, experiment.initial_values),
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


def build_in_process(
    experiment: Experiment, server: Server, faults: FaultModel, intruder: Intruder | None = None
) -> InProcessTransport:
    """Clients trained in this process by the experiment's engine, ``faults`` simulated.

    ``faults`` is the loop's own fault model: the loop draws the fates, the
    transport applies the deadline and the attackers.
    """
    config = experiment.config
    return InProcessTransport(
        server,
        build_engine(experiment),
        train=train_config(config),
        seed=config.seed,
        faults=faults,
        intruder=intruder,
    )


def build_loop(
    experiment: Experiment,
    transport: Transport | None = None,
    *,
    server: Server | None = None,
    intruder: Intruder | None = None,
) -> RoundLoop:
    """The round loop of ``experiment`` over ``transport`` (default: the in-process one).

    A given ``transport`` comes with the ``server`` it talks to: the loop must drive
    that same object, or the transport would hand out another server's round.
    """
    config = experiment.config
    if transport is not None and server is None:
        raise TypeError("build_loop: a transport needs the server it was built with (server=)")
    server = server or build_server(experiment)
    faults = fault_model(config, len(experiment.clients))
    if transport is None:
        transport = build_in_process(experiment, server, faults, intruder)
    return RoundLoop(
        server,
        build_evaluator(experiment),
        transport,
        num_clients=len(experiment.clients),
        fraction=config.client.fraction,
        seed=config.seed,
        faults=faults,
    )


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
