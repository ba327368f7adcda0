"""The FedMap ClientApp: decode, keep the mask in step, train, reply, all with the core.

A node's memory between rounds is Flower's ``context.state``: the config the
server sent in its hello, the mask version and the mask bits. A node that loses it
(a restart) answers the next hello with version -1, and the server bootstraps it.
(The hello's answer names the version ``epoch``: the wire keeps the name that
nodes of earlier releases send.)
Training runs the simulator's engine on the node's partition, so a Flower client
trains exactly as the same client does in ``fedmap run``. A node configured with
``fedmap-dense = true`` runs :mod:`fedmap.flower.dense_client` instead: a plain
Flower client that knows nothing of FedMap.
"""

from __future__ import annotations

import dataclasses
import resource
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from flwr.app import ConfigRecord, Context, Message, MetricRecord
from flwr.clientapp import ClientApp

from fedmap.core.layout import Layout
from fedmap.core.mask import Mask, pack
from fedmap.engines.base import Engine, RoundConfig
from fedmap.errors import ConfigError, ProtocolError
from fedmap.flower import dense_client
from fedmap.flower.wire import fedmap_content, fedmap_fields
from fedmap.methods.base import ClientTask
from fedmap.protocol.client import NEW_CLIENT_VERSION, ClientState, make_reply, receive_downlink
from fedmap.runs.config import Config, config_from_text
from fedmap.runs.experiment import Experiment, build_engine, prepare, train_config

STATE = "fedmap.state"  # context.state record: config, mask version, mask bits

app = ClientApp()


@dataclass
class _Node:
    """What one node builds once per process: the experiment and its engine."""

    experiment: Experiment
    engine: Engine


_NODES: dict[tuple[str, str], _Node] = {}


@app.query("fedmap_hello")
def hello(message: Message, context: Context) -> Message:
    """Remember the run's config; tell the server which partition and mask version it holds."""
    if _is_dense(context):
        return dense_client.app(message, context)  # a plain client has no such handler
    fields = fedmap_fields(message)
    config_text = str(fields["config"])
    partition = _partition(context)
    config = _parse(config_text)
    if not 0 <= partition < config.data.num_clients:
        raise ConfigError(
            f"node_config partition-id: {partition} is outside 0..{config.data.num_clients - 1}"
        )
    saved = context.state.config_records.get(STATE)
    version = NEW_CLIENT_VERSION
    if saved is not None and "version" in saved:
        version = int(saved["version"])  # type: ignore[arg-type]
    record: dict[str, Any] = dict(saved) if saved is not None else {"version": NEW_CLIENT_VERSION}
    record["config"] = config_text
    _save(context, record)
    return Message(fedmap_content({"partition": partition, "epoch": version}), reply_to=message)


@app.train("fedmap")
def train(message: Message, context: Context) -> Message:
    """One FedMap round on this node's partition; the reply carries the cost of it."""
    cpu_start, wall_start = time.process_time(), time.perf_counter()
    saved = context.state.config_records.get(STATE)
    if saved is None or "config" not in saved:
        raise ProtocolError("a FedMap round arrived before the server's hello")
    node = _node(str(saved["config"]), context)
    experiment = node.experiment
    layout, config = experiment.layout, experiment.config
    fields = fedmap_fields(message)
    received = receive_downlink(bytes(fields["message"]), _client_state(saved, layout), layout)
    state, mask = received.state, received.state.mask
    assert mask is not None
    task = _task(fields)
    settings = train_config(config)
    round_cfg = RoundConfig.for_task(received.message.round, config.seed, settings, task)
    partition = _partition(context)
    start = pack(received.values, mask)
    result = node.engine.train_cohort(start, mask, [partition], round_cfg)[0]
    reply = make_reply(
        task,
        result.packed.float(),
        mask,
        state,
        round=received.message.round,
        num_samples=result.num_samples,
        train_loss=result.train_loss,
        dtype=config.transport.dtype,
        layout=layout,
        grad_mean=result.grad_mean,
        grad_sq=result.grad_sq,
        chosen=result.own_mask,
    )
    _save(
        context,
        {**dict(saved), "version": state.version, "mask": _bits(mask)},
    )
    out: dict[str, Any] = {"update": reply.update.data, "mask-sha": mask.digest}
    if reply.statistics is not None:
        out["statistics"] = reply.statistics.data
    content = fedmap_content(out)
    content["cost"] = MetricRecord(
        {
            "cpu-s": time.process_time() - cpu_start,
            "train-s": time.perf_counter() - wall_start,
            "peak-rss-mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
    )
    return Message(content, reply_to=message)


@app.train()
def train_dense(message: Message, context: Context) -> Message:
    """Plain Flower training messages are for dense nodes only."""
    if not _is_dense(context):
        raise ProtocolError("a FedMap node received a plain dense training message")
    return dense_client.app(message, context)


def _is_dense(context: Context) -> bool:
    return str(context.node_config.get("fedmap-dense", "false")).lower() == "true"


def _partition(context: Context) -> int:
    if "partition-id" not in context.node_config:
        raise ConfigError("node_config: partition-id is missing (set it with --node-config)")
    return int(context.node_config["partition-id"])


def _parse(config_text: str) -> Config:
    return config_from_text(config_text, "the server's config")


def _node(config_text: str, context: Context) -> _Node:
    """The experiment for ``config_text`` (cached per process); node_config may move data."""
    data_path = str(context.node_config.get("data-path", ""))
    key = (config_text, data_path)
    if key not in _NODES:
        config = _parse(config_text)
        if data_path:
            config = dataclasses.replace(
                config, data=dataclasses.replace(config.data, path=data_path)
            )
        experiment = prepare(config)
        experiment.engine = "sequential"  # one client: the simulator's sequential arithmetic
        _NODES.clear()  # one run per process at a time
        _NODES[key] = _Node(experiment, build_engine(experiment))
    return _NODES[key]


def _client_state(saved: Any, layout: Layout) -> ClientState:
    version = int(saved["version"]) if "version" in saved else NEW_CLIENT_VERSION
    if "mask" not in saved:
        return ClientState(version, None)
    bits = np.unpackbits(np.frombuffer(bytes(saved["mask"]), dtype=np.uint8))
    bits = bits[: layout.num_prunable].astype(bool)
    return ClientState(version, Mask.from_prunable_bits(layout, torch.from_numpy(bits)))


def _bits(mask: Mask) -> bytes:
    return np.packbits(mask.prunable_bits().numpy().astype(np.uint8)).tobytes()


def _task(fields: dict[str, Any]) -> ClientTask | None:
    if not any(k.startswith("task-") for k in fields):
        return None
    prune_to, drop_to = fields.get("task-prune-to"), fields.get("task-drop-to")
    return ClientTask(
        prune_to=None if prune_to is None else float(prune_to),
        drop_to=None if drop_to is None else float(drop_to),
        importance=bool(fields.get("task-importance", False)),
        initial_pruning=bool(fields.get("task-initial-pruning", False)),
    )


def _save(context: Context, record: dict[str, Any]) -> None:
    context.state.config_records[STATE] = ConfigRecord(record)
