"""Dense FedAvg in Flower 1.42 (Message API, simulation runtime), for benchmarks/speed.py.

What a Flower user writes for the same experiment: ``flwr.serverapp.strategy.FedAvg``
on the server, a ClientApp that loads the global ``state_dict``, trains its
partition with plain PyTorch SGD and returns the new ``state_dict``. Data,
partition, model and local training are fedmap's, so the work is identical to
the fedmap contenders; only the orchestration differs. Nothing here is part of
the fedmap package (issue #4 builds the real Flower integration).

Round times come from the strategy's ``evaluate_fn``, which Flower calls before
round 1 and after every round; it evaluates only after the last round.
"""

from __future__ import annotations

import os
import random
import time
from functools import cache
from typing import Any

import torch
from speed_worker import Workload, config_for, dataset_for


@cache
def _client_side(workload_key: str, device: str) -> tuple[Any, Any, list[Any]]:
    """Dataset, model and partition, built once per Ray actor process."""
    from speed_worker import WORKLOADS

    from fedmap.runs.experiment import prepare

    w = WORKLOADS[workload_key]
    e = prepare(config_for(w, "sequential", device, 1), dataset_for(w))
    return e.dataset, e.model, e.clients


def build_apps(workload_key: str, w: Workload, device: str, rounds: int) -> tuple[Any, Any, dict]:
    """The ServerApp and ClientApp, and a dict the server fills with timestamps."""
    from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg

    from fedmap.training.evaluate import score
    from fedmap.training.train import TrainConfig, train_local

    client_app = ClientApp()
    stamps: dict[str, Any] = {"t": [], "accuracy": None}

    @client_app.train()
    def train(msg: Message, context: Context) -> Message:
        torch.set_num_threads(1)  # one core per ClientApp actor (num_cpus=1)
        dataset, model, clients = _client_side(workload_key, device)
        on = next(model.parameters()).device
        pid = int(context.node_config["partition-id"])
        model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        index = torch.from_numpy(clients[pid].train_idx)
        x, y = dataset.x_train[index].to(on), dataset.y_train[index].to(on)
        if x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        config = TrainConfig(1, w.batch_size, w.lr, w.momentum, 0.0)
        rnd = int(msg.content["config"]["server-round"])
        loss = train_local(
            model, {}, x, y, config, torch.Generator().manual_seed(rnd * 100003 + pid)
        )
        content = RecordDict(
            {
                "arrays": ArrayRecord(model.state_dict()),
                "metrics": MetricRecord({"train_loss": loss, "num-examples": len(index)}),
            }
        )
        return Message(content=content, reply_to=msg)

    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        random.seed(0)  # Flower samples nodes with the random module
        dataset, model, _ = _client_side(workload_key, device)
        strategy = FedAvg(
            fraction_train=w.fraction,
            fraction_evaluate=0.0,
            min_train_nodes=w.cohort,
            min_available_nodes=w.num_clients,
        )

        def evaluate(rnd: int, arrays: ArrayRecord) -> MetricRecord | None:
            stamps["t"].append(time.perf_counter())
            if rnd == 0:
                stamps["ready"] = time.time()
            if rnd < rounds:
                return None
            model.load_state_dict(arrays.to_torch_state_dict())
            on = next(model.parameters()).device
            x = dataset.x_test.to(on)
            if x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            y = dataset.y_test.to(on)
            stamps["accuracy"] = score(model, x, y, batch_size=256).accuracy
            return MetricRecord({"accuracy": stamps["accuracy"]})

        strategy.start(
            grid=grid,
            initial_arrays=ArrayRecord(model.state_dict()),
            num_rounds=rounds,
            train_config=ConfigRecord({}),
            evaluate_fn=evaluate,
        )

    return server_app, client_app, stamps


def run_flower(key: str, device: str, rounds: int) -> dict[str, Any]:
    """Run Flower's simulation runtime (Ray backend, one CPU per ClientApp)."""
    from flwr.simulation import run_simulation
    from speed_worker import WORKLOADS

    w = WORKLOADS[key]
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    here = os.path.dirname(os.path.abspath(__file__))
    os.environ["PYTHONPATH"] = os.pathsep.join([here, os.environ.get("PYTHONPATH", "")])
    server_app, client_app, stamps = build_apps(key, w, device, rounds)
    gpus = (
        1.0 / w.cohort
        if device == "cuda" or (device == "auto" and torch.cuda.is_available())
        else 0.0
    )
    run_simulation(
        server_app=server_app,
        client_app=client_app,
        num_supernodes=w.num_clients,
        backend_config={"client_resources": {"num_cpus": 1, "num_gpus": gpus}},
    )
    t = stamps["t"]
    if stamps["accuracy"] is None or len(t) != rounds + 1:
        raise RuntimeError(f"Flower run did not finish: {len(t) - 1} of {rounds} rounds")
    return {
        "ready": stamps["ready"],
        "round_s": [b - a for a, b in zip(t[:-1], t[1:], strict=True)],
        "accuracy": stamps["accuracy"],
        "device": device,
    }
