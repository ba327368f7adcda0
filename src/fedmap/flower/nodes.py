"""The Flower nodes a FedMap server knows: who holds which partition, and what each round cost.

A FedMap node answers the server's hello with its partition and the mask version
it holds; a plain Flower client has no such handler and answers with that error,
which marks it dense. A partition has one holder at a time: a second node claiming
it waits (named in the events) until the holder fails, leaves or goes silent.
Nothing a node answers can raise out of here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from flwr.app import Message
from flwr.serverapp import Grid

from fedmap.errors import ProtocolError
from fedmap.flower.wire import HELLO, fedmap_content, fedmap_fields, flower_nbytes
from fedmap.protocol.client import NEW_CLIENT_VERSION

log = logging.getLogger(__name__)
NODE_UNAVAILABLE = 5  # flwr ErrorCode: the SuperLink gave up on a node's heartbeat
NO_HANDLER = "No query function registered"  # what a ClientApp without our hello raises


@dataclass
class Node:
    """A Flower node as the server knows it."""

    node_id: int
    client: int  # partition id (FedMap node), or the node id (plain dense node)
    dense: bool
    version: int = NEW_CLIENT_VERSION  # the mask version it holds


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


class Nodes:
    """The nodes greeted so far, by node id; see the module docstring.

    Parameters
    ----------
    config_toml
        The resolved run config, sent to each new node in its hello.
    num_clients
        Partitions of the experiment; a node must claim one of them.
    timeout_s
        How long a hello waits for its answer.
    """

    def __init__(self, config_toml: str, num_clients: int, timeout_s: float) -> None:
        self.config_toml = config_toml
        self.num_clients = num_clients
        self.timeout_s = timeout_s
        self.known: dict[int, Node] = {}
        self.waiting: set[int] = set()  # FedMap nodes whose partition another node holds
        self.control_bytes = 0  # hellos: outside the ledger, inside Flower's bytes
        self.problems: list[tuple[int, str]] = []  # (node id, why) since last taken

    def discover(self, grid: Grid) -> None:
        """Greet nodes seen for the first time; forget nodes that left."""
        present = set(grid.get_node_ids())
        for gone in set(self.known) - present:
            del self.known[gone]
            self.waiting.clear()
        new = sorted(present - set(self.known) - self.waiting)
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

    def take_problems(self) -> list[tuple[int, str]]:
        """What went wrong with greetings since the last call (and forget it)."""
        problems, self.problems = self.problems, []
        return problems

    def by_partition(self) -> dict[int, Node]:
        """FedMap nodes by the partition they hold."""
        return {n.client: n for n in self.known.values() if not n.dense}

    def dense(self) -> list[Node]:
        """Plain dense Flower nodes (they take part in every round)."""
        return [n for n in self.known.values() if n.dense]

    def forget(self, node: Node) -> None:
        """Drop a node that failed or went silent; it is greeted again when next seen."""
        self.known.pop(node.node_id, None)
        self.waiting.clear()  # a partition may be free now: greet the spare nodes again

    def _greeted(self, node_id: int, reply: Message) -> None:
        """Record one node's answer to the hello.

        The answer's ``epoch`` field is the mask version the node holds (the wire
        name predates the word, and nodes of earlier releases still send it).
        """
        if reply.has_error():
            reason = reply.error.reason or ""
            if NO_HANDLER in reason:
                log.info("node %d has no FedMap hello handler: a plain dense client", node_id)
                self.known[node_id] = Node(node_id, node_id, dense=True)
            elif reply.error.code != NODE_UNAVAILABLE:  # gone: greeted again when back
                self.problems.append((node_id, f"hello failed: {reason}"))
            return
        fields = fedmap_fields(reply)
        partition, version = fields.get("partition"), fields.get("epoch")
        if not isinstance(partition, int) or not 0 <= partition < self.num_clients:
            raise ProtocolError(f"partition {partition!r} is not in 0..{self.num_clients - 1}")
        if not isinstance(version, int):
            raise ProtocolError(f"mask version (epoch) {version!r} is not an integer")
        holder = next((n for n in self.known.values() if n.client == partition), None)
        if holder is not None and not holder.dense and holder.node_id != node_id:
            self.waiting.add(node_id)
            self.problems.append(
                (node_id, f"partition {partition} is held by node {holder.node_id}; waiting")
            )
            return
        self.known[node_id] = Node(node_id, partition, False, version)


def destination(reply: Message, sent: list[Message]) -> int | None:
    """The node a reply answers for (None: not one of ``sent``).

    Not the reply's source: when a node dies, the SuperLink itself (node id 1)
    answers for it with a NODE_UNAVAILABLE error.
    """
    for message in sent:
        if message.metadata.message_id == reply.metadata.reply_to_message_id:
            return message.metadata.dst_node_id
    return None
