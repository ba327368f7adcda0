"""The FedMap strategy on Flower's Message API, and the round loop that drives it.

:class:`FedMapFlowerStrategy` is a Flower ``Strategy``: ``configure_train`` turns
the round's plan into one message per node (FedMap bytes, or full tensors for a
plain dense client), ``aggregate_train`` validates every reply with the same
:class:`~fedmap.strategies.server.Server` the simulator uses. :class:`FlowerRounds`
is the simulator's round loop (:class:`~fedmap.engines.simulate.RoundLoop`) with
those two calls as its transport, so planning, retries, aggregation, evaluation
and the metrics are one code path for both front doors.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedmap.client.protocol import NEW_CLIENT_EPOCH
from fedmap.client.train import TrainConfig
from fedmap.core.codec import UPLINK, Encoded, encode, measure
from fedmap.core.codec import Message as FedMapMessage
from fedmap.core.ledger import LedgerEntry, dense_entry, ledger_entry, statistics_entry
from fedmap.core.mask import pack
from fedmap.engines.evaluation import Evaluator
from fedmap.engines.faults import Fate, FaultModel
from fedmap.engines.simulate import Event, RoundLoop, _Attempt
from fedmap.errors import CodecError, FedMapError, ProtocolError, UpdateRejected
from fedmap.flower.wire import (
    DENSE_TRAIN,
    HELLO,
    TRAIN,
    fedmap_content,
    fedmap_fields,
    flower_nbytes,
    from_array_record,
    to_array_record,
)
from fedmap.strategies.server import Server

log = logging.getLogger(__name__)
NODE_UNAVAILABLE = 5  # flwr ErrorCode: the SuperLink gave up on a node's heartbeat
NO_HANDLER = "No query function registered"  # what a ClientApp without our hello raises

# Columns the Flower run adds to every metrics row.
FLOWER_COLUMNS = (
    "flower_bytes_up",
    "flower_bytes_down",
    "flower_bytes_cum",
    "flower_framing_max",
    "flower_control_bytes",
    "nodes",
    "client_cpu_s_mean",
    "client_peak_rss_mb_max",
)


@dataclass
class Node:
    """A Flower node as the server knows it."""

    node_id: int
    client: int  # partition id (FedMap node), or the node id (plain dense node)
    dense: bool
    epoch: int = NEW_CLIENT_EPOCH


@dataclass(frozen=True)
class NodeCost:
    """One node's share of one round: bytes both ways (ledger and Flower) and its cost."""

    round: int
    node_id: int
    client: int
    kind: str  # "fedmap" or "dense"
    ledger_down: int
    flower_down: int
    ledger_up: int = 0
    flower_up: int = 0
    cpu_s: float = float("nan")
    train_s: float = float("nan")
    peak_rss_mb: float = float("nan")


@dataclass
class _Scratch:
    """One attempt's bookkeeping, shared by configure_train and aggregate_train."""

    ledger: list[LedgerEntry]
    events: list[Event]
    counts: dict[str, int]
    attempt: int
    sent: dict[int, Node] = field(default_factory=dict)  # by node id
    messages: list[Message] = field(default_factory=list)  # as sent (Flower sets their ids)
    costs: dict[int, NodeCost] = field(default_factory=dict)
    accepted: list[tuple[int, FedMapMessage]] = field(default_factory=list)


class FedMapFlowerStrategy(Strategy):
    """FedMap (and every baseline) as a Flower strategy around a :class:`Server`.

    Parameters
    ----------
    server
        The protocol's server (the same object the simulator would build).
    config_toml
        The resolved run config, sent to each new node in its hello.
    num_clients
        Partitions of the experiment; a node must claim one of them.
    timeout_s
        How long a round waits for replies (a dead node's message is given up then).
    """

    def __init__(
        self, server: Server, config_toml: str, *, num_clients: int, timeout_s: float = 120.0
    ) -> None:
        self.server = server
        self.config_toml = config_toml
        self.num_clients = num_clients
        self.timeout_s = timeout_s
        self.nodes: dict[int, Node] = {}
        self.waiting: set[int] = set()  # FedMap nodes whose partition another node holds
        self.scratch: _Scratch | None = None
        self.control_bytes = 0  # hellos: outside the ledger, inside Flower's bytes
        self.problems: list[tuple[int, str]] = []  # (node id, why) since the last round

    def summary(self) -> None:
        """Log what runs (Flower calls this when a strategy starts)."""
        log.info("FedMap strategy: %s, timeout %.0f s", self.server.strategy.name, self.timeout_s)

    def discover(self, grid: Grid) -> None:
        """Greet nodes seen for the first time; forget nodes that left.

        A FedMap node answers with its partition and the mask epoch it holds; a
        plain Flower client has no such handler and answers with that error, which
        marks it dense. A partition has one holder at a time: a second node claiming
        it waits (named in the events) until the holder fails, leaves or goes silent.
        Nothing a node answers can raise out of here.
        """
        present = set(grid.get_node_ids())
        for gone in set(self.nodes) - present:
            del self.nodes[gone]
            self.waiting.clear()
        new = sorted(present - set(self.nodes) - self.waiting)
        if not new:
            return
        messages = [
            Message(fedmap_content({"config": self.config_toml}), dst_node_id=n, message_type=HELLO)
            for n in new
        ]
        self.control_bytes += sum(flower_nbytes(m) for m in messages)
        for reply in grid.send_and_receive(messages, timeout=self.timeout_s):
            self.control_bytes += flower_nbytes(reply)
            node_id = destination(reply, messages)
            if node_id is None:
                continue
            try:
                self._greeted(node_id, reply)
            except Exception as error:  # noqa: BLE001 - a node's answer must never stop the run
                self.problems.append((node_id, f"hello refused: {error!r}"))

    def _greeted(self, node_id: int, reply: Message) -> None:
        """Record one node's answer to the hello."""
        if reply.has_error():
            reason = reply.error.reason or ""
            if NO_HANDLER in reason:
                log.info("node %d has no FedMap hello handler: a plain dense client", node_id)
                self.nodes[node_id] = Node(node_id, node_id, dense=True)
            elif reply.error.code != NODE_UNAVAILABLE:  # gone: greeted again when back
                self.problems.append((node_id, f"hello failed: {reason}"))
            return
        fields = fedmap_fields(reply)
        partition, epoch = fields.get("partition"), fields.get("epoch")
        if not isinstance(partition, int) or not 0 <= partition < self.num_clients:
            raise ProtocolError(f"partition {partition!r} is not in 0..{self.num_clients - 1}")
        if not isinstance(epoch, int):
            raise ProtocolError(f"epoch {epoch!r} is not an integer")
        holder = next((n for n in self.nodes.values() if n.client == partition), None)
        if holder is not None and not holder.dense and holder.node_id != node_id:
            self.waiting.add(node_id)
            self.problems.append(
                (node_id, f"partition {partition} is held by node {holder.node_id}; waiting")
            )
            return
        self.nodes[node_id] = Node(node_id, partition, False, epoch)

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """One message per sampled FedMap node and per dense node (``arrays`` is unused).

        The cohort is fixed beforehand in ``config["cohort"]`` (partition ids, as
        the simulator samples them); a sampled partition no node holds is dropped.
        """
        scratch, server = self._scratch(), self.server
        dtype = server.dtype
        by_partition = {n.client: n for n in self.nodes.values() if not n.dense}
        messages = []
        for client in [int(c) for c in config["cohort"]]:  # type: ignore[union-attr]
            node = by_partition.get(client)
            if node is None:
                scratch.counts["dropped"] += 1
                scratch.events.append(
                    Event(server_round, scratch.attempt, client, "dropped", "no node online")
                )
                continue
            encoded, sent_mask = server.downlink(node.epoch, client)
            scratch.ledger.append(
                ledger_entry(
                    encoded,
                    round=server_round,
                    client=client,
                    direction="down",
                    mask=sent_mask,
                    dtype=dtype,
                )
            )
            scratch.counts["bootstraps"] += encoded.mask_nbytes > 0
            messages.append(self._train_message(node, encoded, server_round))
        dense = [n for n in self.nodes.values() if n.dense]
        scratch.counts["sampled"] += len(dense)  # not sampled: they take part in every round
        if dense:  # one dense copy of the model for all of them
            record = to_array_record(server.model.values, server.layout)
            nbytes = sum(a.numpy().nbytes for a in record.values())
            train = ConfigRecord({"fedmap-config": self.config_toml})
        for node in dense:
            server.expect(node.client)
            entry = dense_entry(
                nbytes,
                round=server_round,
                client=node.client,
                direction="down",
                mask=server.model.mask,
                dtype=dtype,
            )
            scratch.ledger.append(entry)
            message = Message(
                RecordDict({"arrays": record, "config": train}),
                dst_node_id=node.node_id,
                message_type=DENSE_TRAIN,
            )
            self._sent(scratch, node, message, server_round, nbytes)
            messages.append(message)
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Validate each reply with the server and screen the cohort; aggregation waits.

        The global model changes only in :meth:`Server.finish_round`, after the
        loop knows the attempt had enough valid replies; so nothing is returned.
        A node's reply can only be accepted, refused or missing: whatever it holds,
        it never raises out of here (one hostile node must not stop the run).
        """
        scratch, server = self._scratch(), self.server
        accepted: list[tuple[int, FedMapMessage]] = []
        sent_to = {m.metadata.message_id: m.metadata.dst_node_id for m in scratch.messages}
        answered = [
            (reply, scratch.sent[node_id])
            for reply in replies
            if (node_id := sent_to.get(reply.metadata.reply_to_message_id)) in scratch.sent
        ]
        # Arrival order is the network's; aggregation in client order keeps a run
        # reproducible (and equal to the simulator's, which trains the cohort in order).
        answered.sort(key=lambda pair: pair[1].client)
        for reply, node in answered:
            cost = scratch.costs[node.node_id]
            scratch.costs[node.node_id] = replace(
                cost,
                flower_up=flower_nbytes(reply),
                **_cost(reply),  # type: ignore[arg-type]
            )
            if reply.has_error():  # the node failed, or the SuperLink gave up on it
                scratch.counts["dropped"] += 1
                reason = f"node failed: {reply.error.reason}"
                scratch.events.append(
                    Event(server_round, scratch.attempt, node.client, "dropped", reason)
                )
                self._forget(node)
                continue
            try:
                message = self._read_reply(reply, node, server_round)
            except Exception as error:  # noqa: BLE001 - a node's bytes must never stop the run
                scratch.counts["rejected"] += 1
                reason = str(error) if isinstance(error, FedMapError) else repr(error)
                scratch.events.append(
                    Event(server_round, scratch.attempt, node.client, "rejected", reason)
                )
                continue
            accepted.append((node.client, message))
        replied = {node.node_id for _, node in answered}
        for node in [n for n in scratch.sent.values() if n.node_id not in replied]:
            scratch.counts["late"] += 1
            scratch.events.append(
                Event(server_round, scratch.attempt, node.client, "late", "no reply in time")
            )
            self._forget(node)  # it may have restarted: greet it again
        screening = server.screen(accepted)
        for client, reason in screening.rejected:
            scratch.counts["rejected"] += 1
            scratch.events.append(Event(server_round, scratch.attempt, client, "rejected", reason))
        scratch.events += [
            Event(server_round, scratch.attempt, c, "capped", r) for c, r in screening.capped
        ]
        scratch.accepted = screening.accepted
        return None, None

    def _read_reply(self, reply: Message, node: Node, server_round: int) -> FedMapMessage:
        """Charge and validate one reply; raise with the reason if it is refused.

        A FedMap node names the mask it decoded: matching the server's, it is in
        step whatever becomes of its update (as a simulated client is once it has
        received the round); not matching, it is bootstrapped next time.
        """
        scratch, server = self._scratch(), self.server
        data, stats = self._reply_bytes(reply, node, server_round)
        message: FedMapMessage | None = None
        try:
            if not node.dense:
                self._check_mask(reply, node, server_round)
            message = server.read_reply(data, node.client)
        finally:  # what arrived is charged, accepted or not
            entry = self._uplink_entry(reply, node, data, server_round, message)
            entries = [entry]
            if stats is not None:
                entries.append(statistics_entry(_measure(stats), entry))
            scratch.ledger += entries
            cost = scratch.costs[node.node_id]
            scratch.costs[node.node_id] = replace(cost, ledger_up=sum(e.total for e in entries))
        if stats is not None:
            try:
                server.read_statistics(stats, node.client)
            except UpdateRejected as error:  # the update stands; only its scores are lost
                scratch.events.append(
                    Event(server_round, scratch.attempt, node.client, "rejected", str(error))
                )
        return message

    def _forget(self, node: Node) -> None:
        """Drop a node that failed or went silent; it is greeted again when next seen."""
        self.nodes.pop(node.node_id, None)
        self.waiting.clear()  # a partition may be free now: greet the spare nodes again

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """No client-side evaluation: the server evaluates every round (as the simulator)."""
        return []

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Nothing to aggregate (see :meth:`configure_evaluate`)."""
        return None

    def _train_message(self, node: Node, encoded: Encoded, server_round: int) -> Message:
        fields: dict[str, Any] = {"message": encoded.data}
        task = self.server.plan.task if self.server.plan is not None else None
        if task is not None:
            if task.prune_to is not None:
                fields["task-prune-to"] = task.prune_to
            if task.drop_to is not None:
                fields["task-drop-to"] = task.drop_to
            fields["task-importance"] = task.importance
            fields["task-initial-pruning"] = task.initial_pruning
        message = Message(fedmap_content(fields), dst_node_id=node.node_id, message_type=TRAIN)
        self._sent(self._scratch(), node, message, server_round, len(encoded.data))
        return message

    def _sent(
        self, scratch: _Scratch, node: Node, message: Message, server_round: int, ledger: int
    ) -> None:
        scratch.sent[node.node_id] = node
        scratch.messages.append(message)
        kind = "dense" if node.dense else "fedmap"
        scratch.costs[node.node_id] = NodeCost(
            server_round, node.node_id, node.client, kind, ledger, flower_nbytes(message)
        )

    def _reply_bytes(
        self, reply: Message, node: Node, server_round: int
    ) -> tuple[bytes, bytes | None]:
        """The reply as FedMap uplink bytes (a dense client's tensors are packed here)."""
        if not node.dense:
            fields = fedmap_fields(reply)
            update, stats = fields.get("update"), fields.get("statistics")
            if not isinstance(update, bytes) or not isinstance(stats, bytes | None):
                raise ProtocolError("reply's update and statistics must be bytes")
            return update, stats
        server = self.server
        values, _ = from_array_record(reply.content.array_records["arrays"], server.layout)
        metrics = reply.content.metric_records["metrics"]
        samples, loss = metrics.get("num-examples"), metrics.get("train_loss", 0.0)
        if not isinstance(samples, int) or not 0 < samples < 2**31:
            raise ProtocolError(f"dense reply's num-examples is {samples!r}")
        if not isinstance(loss, int | float) or not abs(loss) < 3e38:
            raise ProtocolError(f"dense reply's train_loss is {loss!r}")
        message = FedMapMessage(
            UPLINK,
            server_round,
            server.model.epoch,
            pack(values, server.model.mask),
            server.dtype,
            num_samples=samples,
            train_loss=float(loss),
        )
        return encode(message, server.layout.fingerprint).data, None

    def _uplink_entry(
        self,
        reply: Message,
        node: Node,
        data: bytes,
        server_round: int,
        message: FedMapMessage | None,
    ) -> LedgerEntry:
        """What the node sent, priced on the mask its values use (the model's if refused)."""
        server = self.server
        mask = server.model.mask if message is None else server.reply_mask(message)
        if node.dense:  # charged what it really sent: every tensor, dense
            _, nbytes = from_array_record(reply.content.array_records["arrays"], server.layout)
            return dense_entry(
                nbytes,
                round=server_round,
                client=node.client,
                direction="up",
                mask=mask,
                dtype=server.dtype,
            )
        return ledger_entry(
            _measure(data),
            round=server_round,
            client=node.client,
            direction="up",
            mask=mask,
            dtype=server.dtype,
        )

    def _check_mask(self, reply: Message, node: Node, server_round: int) -> None:
        """A FedMap node reports its mask's digest: it must be the server's (invariant 2)."""
        digest = fedmap_fields(reply).get("mask-sha")
        if digest != self.server.model.mask.digest:
            node.epoch = NEW_CLIENT_EPOCH  # whatever it holds, the next downlink bootstraps it
            raise ProtocolError(
                f"round {server_round}: node {node.node_id} holds mask {digest!r}, "
                f"the server {self.server.model.mask.digest} (invariant 2)"
            )
        node.epoch = self.server.model.epoch

    def _scratch(self) -> _Scratch:
        if self.scratch is None:
            raise RuntimeError("FlowerRounds sets the attempt's scratch before configure_train")
        return self.scratch


def destination(reply: Message, sent: list[Message]) -> int | None:
    """The node a reply answers for (None: not one of ``sent``).

    Not the reply's source: when a node dies, the SuperLink itself (node id 1)
    answers for it with a NODE_UNAVAILABLE error.
    """
    for message in sent:
        if message.metadata.message_id == reply.metadata.reply_to_message_id:
            return message.metadata.dst_node_id
    return None


def _cost(reply: Message) -> dict[str, float]:
    """The cost a node reports for its local round (nothing if absent or malformed)."""
    if reply.has_error() or "cost" not in reply.content.metric_records:
        return {}
    cost = reply.content.metric_records["cost"]
    names = {"cpu_s": "cpu-s", "train_s": "train-s", "peak_rss_mb": "peak-rss-mb"}
    values = {field: cost.get(key) for field, key in names.items()}
    if not all(isinstance(v, int | float) and math.isfinite(v) for v in values.values()):
        return {}
    return {field: float(v) for field, v in values.items()}  # type: ignore[arg-type]


def _measure(data: bytes) -> Encoded:
    """How received bytes split for the ledger; garbage is charged whole, as values."""
    try:
        return measure(data)
    except CodecError:
        return Encoded(data, 0, len(data))


class FlowerRounds(RoundLoop):
    """The simulator's round loop with Flower as the transport.

    Parameters
    ----------
    strategy
        The Flower strategy that builds and reads the messages.
    grid
        Flower's grid of the running ServerApp.
    evaluator, num_clients, fraction, train, seed, faults
        As for :class:`~fedmap.engines.simulate.RoundLoop` (``faults`` sets
        ``min_clients`` and ``max_attempts``; over Flower every failure is real).
    """

    def __init__(
        self,
        strategy: FedMapFlowerStrategy,
        grid: Grid,
        evaluator: Evaluator,
        *,
        num_clients: int,
        fraction: float,
        train: TrainConfig,
        seed: int,
        faults: FaultModel | None = None,
    ) -> None:
        super().__init__(
            strategy.server,
            evaluator,
            num_clients=num_clients,
            fraction=fraction,
            train=train,
            seed=seed,
            faults=faults,
        )
        self.strategy = strategy
        self.grid = grid
        self.costs: list[NodeCost] = []  # this round's, every attempt
        self.flower_cum = 0
        self._control_seen = 0

    def _attempt(
        self,
        rnd: int,
        attempt: int,
        cohort: list[int],
        fates: dict[int, Fate],
        ledger: list[LedgerEntry],
        events: list[Event],
        counts: dict[str, int],
    ) -> _Attempt:
        """Greet new nodes, send the round, wait for replies, validate them."""
        if attempt == 0:
            self.costs = []
        strategy = self.strategy
        strategy.discover(self.grid)
        for node_id, reason in strategy.problems:  # the node's id: it holds no partition yet
            events.append(Event(rnd, attempt, node_id, "rejected", reason))
        strategy.problems.clear()
        scratch = _Scratch(ledger, events, counts, attempt)
        strategy.scratch = scratch
        config = ConfigRecord({"cohort": [int(c) for c in cohort]})
        messages = list(strategy.configure_train(rnd, ArrayRecord(), config, self.grid))
        replies = self.grid.send_and_receive(messages, timeout=strategy.timeout_s)
        strategy.aggregate_train(rnd, replies)
        self.costs += list(scratch.costs.values())
        participants = sorted(n.client for n in scratch.sent.values())
        return _Attempt(scratch.accepted, participants)

    def _round_extra(self, rnd: int) -> dict[str, Any]:
        """Flower's bytes beside the ledger's, and what the clients' local rounds cost."""
        up = sum(c.flower_up for c in self.costs)
        down = sum(c.flower_down for c in self.costs)
        control = self.strategy.control_bytes - self._control_seen
        self._control_seen = self.strategy.control_bytes
        self.flower_cum += up + down + control
        framing = [c.flower_down - c.ledger_down for c in self.costs]
        framing += [c.flower_up - c.ledger_up for c in self.costs if c.flower_up]
        cpu = [c.cpu_s for c in self.costs if c.cpu_s == c.cpu_s]
        rss = [c.peak_rss_mb for c in self.costs if c.peak_rss_mb == c.peak_rss_mb]
        return {
            "flower_bytes_up": up,
            "flower_bytes_down": down,
            "flower_bytes_cum": self.flower_cum,
            "flower_framing_max": max(framing, default=0),
            "flower_control_bytes": control,
            "nodes": len(self.strategy.nodes),
            "client_cpu_s_mean": round(statistics.fmean(cpu), 4) if cpu else float("nan"),
            "client_peak_rss_mb_max": round(max(rss), 1) if rss else float("nan"),
        }
