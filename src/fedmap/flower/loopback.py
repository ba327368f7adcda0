"""An in-process Flower grid: the real ServerApp and ClientApps without any process or socket.

For tests, benchmarks of the wire format and debugging. Each node is a ClientApp
with its own persistent Context (as a SuperNode keeps one per run). Messages are
deflated into Flower's objects and inflated again on the way, so what a node reads
is what Flower's wire would deliver and :func:`fedmap.flower.wire.flower_nbytes`
measures the same objects; an exception in a ClientApp becomes an error reply, as
Flower's runtime makes it. A node put in :attr:`LoopbackGrid.offline` answers
with Flower's NODE_UNAVAILABLE error, as the SuperLink does for a dead node.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from flwr.app import Context, Error, Message, RecordDict, UserConfig
from flwr.serverapp import Grid
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects
from flwr.supercore.inflatable.inflatable_utils import inflate_object_from_contents
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity


def through_wire(message: Message) -> Message:
    """``message`` deflated to Flower's objects and inflated again (what a receiver gets)."""
    objects = get_all_nested_objects(message)
    contents = {oid: obj.deflate() for oid, obj in objects.items()}
    received = inflate_object_from_contents(message.object_id, contents)
    assert isinstance(received, Message)
    return received


class LoopbackGrid(Grid):
    """A Grid whose nodes are ClientApps called in this process, one message at a time.

    Parameters
    ----------
    apps
        Node id -> the ClientApp that node runs.
    node_configs
        Node id -> its ``node_config`` (``partition-id``, ``fedmap-dense``, ...).
    run_config
        The run config every Context carries.
    """

    def __init__(
        self,
        apps: dict[int, Callable[[Message, Context], Message]],
        node_configs: dict[int, UserConfig],
        run_config: UserConfig,
    ) -> None:
        self.apps = apps
        self.contexts = {
            n: Context(
                run_id=1,
                node_id=n,
                node_config=node_configs[n],
                state=RecordDict(),
                run_config=run_config,
            )
            for n in apps
        }
        self.offline: set[int] = set()
        TaskIdentity.run_id = 1  # what Flower's runtime sets in a ServerApp process
        TaskIdentity.task_id = 1
        TaskIdentity.node_id = 0

    @property
    def run(self) -> Run:
        """Not needed by FedMap's ServerApp."""
        raise NotImplementedError

    def set_run(self, run: Run) -> None:
        """Nothing to set: one run per grid."""

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        """Deprecated in Flower; build :class:`Message` directly."""
        raise NotImplementedError

    def get_node_ids(self) -> Iterable[int]:
        """Nodes that are not offline."""
        return [n for n in self.apps if n not in self.offline]

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Use :meth:`send_and_receive`."""
        raise NotImplementedError

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """Use :meth:`send_and_receive`."""
        raise NotImplementedError

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Deliver each message to its node's ClientApp; return the replies as received."""
        replies = []
        for message in messages:
            node = message.metadata.dst_node_id
            if node in self.offline:
                error = Error(code=5, reason="Node Unavailable")  # the SuperLink answers for it
                replies.append(Message(error, reply_to=message))
                continue
            message.metadata.__dict__["_message_id"] = message.object_id  # as Flower's grid
            message.metadata.__dict__["_src_node_id"] = 0
            received = through_wire(message)
            received.metadata.__dict__["_message_id"] = message.object_id  # Flower restores it
            try:
                reply = self.apps[node](received, self.contexts[node])
            except Exception as error:  # noqa: BLE001 - Flower's runtime does the same
                reply = Message(Error(code=1, reason=repr(error)), reply_to=received)
            replies.append(through_wire(reply))
        return replies
