"""The Flower transport: the round loop's messages carried by Flower's Grid to real nodes.

Per attempt: greet nodes seen for the first time (:mod:`fedmap.flower.nodes`), send
each sampled partition's node its FedMap downlink and every plain dense node the
full model, wait for the replies, and read them with the same protocol server and
:class:`~fedmap.rounds.attempt.AttemptLog` as the simulator. Over Flower every
failure is real: a partition no node holds, a node that errs or answers nothing in
time, a reply that fails validation. Replies are read in client order, whatever
order the network delivered them in, so a run is reproducible and equals the
simulator's. Flower's own bytes are measured beside the ledger's for every message
(``nodes.csv``, the ``flower_*`` columns).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from fedmap.core.codec import Encoded
from fedmap.core.codec import Message as FedMapMessage
from fedmap.core.ledger import dense_entry, statistics_entry
from fedmap.errors import FedMapError, ProtocolError
from fedmap.flower.costs import FLOWER_COLUMNS, round_columns, summarise_nodes
from fedmap.flower.nodes import Node, NodeCost, Nodes
from fedmap.flower.replies import measured, reply_bytes, reported_cost, uplink_entry
from fedmap.flower.wire import (
    DENSE_TRAIN,
    TRAIN,
    fedmap_content,
    fedmap_fields,
    flower_nbytes,
    to_array_record,
)
from fedmap.protocol.client import NEW_CLIENT_VERSION
from fedmap.protocol.server import Server
from fedmap.rounds.attempt import AttemptLog
from fedmap.rounds.records import AttemptResult, RoundEnd, RoundFile
from fedmap.rounds.transport import AttemptRequest


class FlowerTransport:
    """Delivers each attempt over ``grid`` (see module docstring).

    Parameters
    ----------
    server
        The protocol's server (the same object the simulator would build).
    grid
        Flower's grid of the running ServerApp.
    config_toml
        The resolved run config, sent to each new node in its hello.
    num_clients
        Partitions of the experiment; a node must claim one of them.
    timeout_s
        How long a round waits for replies (a dead node's message is given up then).
    """

    columns: tuple[str, ...] = FLOWER_COLUMNS
    resumable = False

    def __init__(
        self,
        server: Server,
        grid: Grid,
        config_toml: str,
        *,
        num_clients: int,
        timeout_s: float = 120.0,
    ) -> None:
        self.server = server
        self.grid = grid
        self.config_toml = config_toml
        self.timeout_s = timeout_s
        self.nodes = Nodes(config_toml, num_clients, timeout_s)
        self.costs: list[NodeCost] = []  # this round's, every attempt
        self.all_costs: list[NodeCost] = []  # the run's
        self.flower_cum = 0
        self._control_seen = 0

    def run_attempt(self, request: AttemptRequest) -> AttemptResult:
        """Greet new nodes, send the round, wait for replies, validate them."""
        if request.attempt == 0:
            self.costs = []
        log = AttemptLog(self.server, request.round, request.attempt)
        log.sampled(len(request.cohort))
        self.nodes.discover(self.grid)
        for node_id, reason in self.nodes.take_problems():  # the node's id: no partition yet
            log.event(node_id, "rejected", reason, counted=False)
        sent: dict[int, tuple[Node, Message]] = {}  # by node id
        costs: dict[int, NodeCost] = {}
        self._send_fedmap(request, log, sent, costs)
        self._send_dense(request.round, log, sent, costs)
        messages = [message for _, message in sent.values()]
        replies = self.grid.send_and_receive(messages, timeout=self.timeout_s)
        accepted = self._read_all(request.round, replies, sent, costs, log)
        self.costs += list(costs.values())
        participants = sorted(node.client for node, _ in sent.values())
        return log.result(log.screen(accepted), participants)

    def _send_fedmap(
        self,
        request: AttemptRequest,
        log: AttemptLog,
        sent: dict[int, tuple[Node, Message]],
        costs: dict[int, NodeCost],
    ) -> None:
        """One FedMap message per sampled partition a node holds; others are dropped."""
        holders = self.nodes.by_partition()
        for client in request.cohort:
            node = holders.get(client)
            if node is None:
                log.event(client, "dropped", "no node online")
                continue
            encoded, _ = log.downlink(client, node.version)
            message = self._train_message(node, encoded)
            sent[node.node_id] = (node, message)
            costs[node.node_id] = _cost_of(request.round, node, message, len(encoded.data))

    def _send_dense(
        self,
        round: int,
        log: AttemptLog,
        sent: dict[int, tuple[Node, Message]],
        costs: dict[int, NodeCost],
    ) -> None:
        """The full model to every plain dense node: they take part in every round."""
        server, dense = self.server, self.nodes.dense()
        log.sampled(len(dense))
        if not dense:
            return
        record = to_array_record(server.model.values, server.layout)  # one copy for all
        nbytes = sum(a.numpy().nbytes for a in record.values())
        train = ConfigRecord({"fedmap-config": self.config_toml})
        for node in dense:
            server.expect(node.client)
            log.charge(
                dense_entry(
                    nbytes,
                    round=round,
                    client=node.client,
                    direction="down",
                    mask=server.model.mask,
                    dtype=server.dtype,
                )
            )
            message = Message(
                RecordDict({"arrays": record, "config": train}),
                dst_node_id=node.node_id,
                message_type=DENSE_TRAIN,
            )
            sent[node.node_id] = (node, message)
            costs[node.node_id] = _cost_of(round, node, message, nbytes)

    def _train_message(self, node: Node, encoded: Encoded) -> Message:
        """A FedMap round for ``node``: its downlink and the round's client task."""
        fields: dict[str, Any] = {"message": encoded.data}
        plan = self.server.plan
        task = plan.task if plan is not None else None
        if task is not None:
            if task.prune_to is not None:
                fields["task-prune-to"] = task.prune_to
            if task.drop_to is not None:
                fields["task-drop-to"] = task.drop_to
            fields["task-importance"] = task.importance
            fields["task-initial-pruning"] = task.initial_pruning
        return Message(fedmap_content(fields), dst_node_id=node.node_id, message_type=TRAIN)

    def _read_all(
        self,
        round: int,
        replies: Any,
        sent: dict[int, tuple[Node, Message]],
        costs: dict[int, NodeCost],
        log: AttemptLog,
    ) -> list[tuple[int, FedMapMessage]]:
        """Read every reply in client order; nodes that failed or stayed silent are forgotten.

        A node's reply can only be accepted, refused or missing: whatever it holds,
        it never raises out of here (one hostile node must not stop the run).
        """
        sent_to = {m.metadata.message_id: node_id for node_id, (_, m) in sent.items()}
        answered = [
            (reply, sent[node_id][0])
            for reply in replies
            if (node_id := sent_to.get(reply.metadata.reply_to_message_id)) in sent
        ]
        answered.sort(key=lambda pair: pair[1].client)  # the network's order is not the run's
        accepted = []
        for reply, node in answered:
            cost = replace(costs[node.node_id], flower_up=flower_nbytes(reply))
            costs[node.node_id] = replace(cost, **reported_cost(reply))  # type: ignore[arg-type]
            if reply.has_error():  # the node failed, or the SuperLink gave up on it
                log.event(node.client, "dropped", f"node failed: {reply.error.reason}")
                self.nodes.forget(node)
                continue
            message = self._read(round, reply, node, costs, log)
            if message is not None:
                accepted.append((node.client, message))
        replied = {node.node_id for _, node in answered}
        for node, _ in [pair for node_id, pair in sent.items() if node_id not in replied]:
            log.event(node.client, "late", "no reply in time")
            self.nodes.forget(node)  # it may have restarted: greet it again
        return accepted

    def _read(
        self,
        round: int,
        reply: Message,
        node: Node,
        costs: dict[int, NodeCost],
        log: AttemptLog,
    ) -> FedMapMessage | None:
        """Charge and validate one reply; a refusal is recorded with its reason (None).

        A FedMap node names the mask it decoded: matching the server's, it is in
        step whatever becomes of its update (as a simulated client is once it has
        received the round); not matching, it is bootstrapped next time.
        """
        try:
            data, stats = reply_bytes(reply, node, self.server, round)
        except Exception as error:  # noqa: BLE001 - a node's bytes must never stop the run
            log.event(node.client, "rejected", _reason(error))
            return None
        message: FedMapMessage | None = None
        try:
            if not node.dense:
                self._check_mask(reply, node, round)
            message = self.server.read_reply(data, node.client)
        except Exception as error:  # noqa: BLE001 - likewise
            log.event(node.client, "rejected", _reason(error))
        entries = [uplink_entry(reply, node, data, round, message, self.server)]
        if stats is not None:
            entries.append(statistics_entry(measured(stats), entries[0]))
        log.charge(*entries)  # what arrived is charged, accepted or not
        costs[node.node_id] = replace(costs[node.node_id], ledger_up=sum(e.total for e in entries))
        if message is not None and stats is not None:
            try:
                log.read_statistics(node.client, stats)
            except Exception as error:  # noqa: BLE001 - likewise; the update stands
                log.event(node.client, "rejected", _reason(error), counted=False)
        return message

    def _check_mask(self, reply: Message, node: Node, round: int) -> None:
        """A FedMap node reports its mask's digest: it must be the server's (invariant 2)."""
        digest = fedmap_fields(reply).get("mask-sha")
        model = self.server.model
        if digest != model.mask.digest:
            node.version = NEW_CLIENT_VERSION  # whatever it holds, the next downlink bootstraps
            raise ProtocolError(
                f"round {round}: node {node.node_id} holds mask {digest!r}, "
                f"the server {model.mask.digest} (invariant 2)"
            )
        node.version = model.version

    def end_round(self, round: int) -> RoundEnd:
        """Flower's bytes beside the ledger's, what the local rounds cost, each node's line."""
        control = self.nodes.control_bytes - self._control_seen
        self._control_seen = self.nodes.control_bytes
        columns = round_columns(self.costs, control, self.flower_cum, len(self.nodes.known))
        self.flower_cum = columns["flower_bytes_cum"]
        self.all_costs += self.costs
        return RoundEnd(columns, (RoundFile("nodes.csv", NodeCost, tuple(self.costs)),))

    def summary(self) -> dict[str, Any]:
        """Per-client cost and framing over the run (``summary.json``'s ``flower``)."""
        return {"flower": summarise_nodes(self.all_costs, self.flower_cum)}

    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Nothing: each node keeps its own memory, so a Flower run cannot resume."""
        raise FedMapError("a Flower run cannot be checkpointed: its nodes hold their own state")

    def load_state_dict(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        """See :meth:`state_dict`."""
        raise FedMapError("a Flower run cannot resume: its nodes hold their own state")


def _cost_of(round: int, node: Node, message: Message, ledger_down: int) -> NodeCost:
    kind = "dense" if node.dense else "fedmap"
    return NodeCost(round, node.node_id, node.client, kind, ledger_down, flower_nbytes(message))


def _reason(error: Exception) -> str:
    """A refusal's reason: our own errors say it in words, anything else by its repr."""
    return str(error) if isinstance(error, FedMapError) else repr(error)
