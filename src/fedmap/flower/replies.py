"""What a Flower node's reply holds, as the server reads and prices it.

A FedMap node's reply carries codec bytes (and PruneFL's statistics) in FedMap's
record; a plain dense client's carries every tensor in an ``ArrayRecord``, which is
packed here into FedMap uplink bytes on the model's mask so that one validator
reads both. Whatever arrived is charged: a FedMap node for its message's bytes, a
dense node for every tensor it really sent.
"""

from __future__ import annotations

import math

from flwr.app import Message

from fedmap.core.codec import UPLINK, Encoded, encode, measure
from fedmap.core.codec import Message as FedMapMessage
from fedmap.core.ledger import LedgerEntry, dense_entry, ledger_entry
from fedmap.core.mask import pack
from fedmap.errors import CodecError, ProtocolError
from fedmap.flower.nodes import Node
from fedmap.flower.wire import fedmap_fields, from_array_record
from fedmap.protocol.server import Server


def reply_bytes(
    reply: Message, node: Node, server: Server, round: int
) -> tuple[bytes, bytes | None]:
    """The reply as FedMap uplink bytes and statistics (a dense client's tensors packed here)."""
    if not node.dense:
        fields = fedmap_fields(reply)
        update, stats = fields.get("update"), fields.get("statistics")
        if not isinstance(update, bytes) or not isinstance(stats, bytes | None):
            raise ProtocolError("reply's update and statistics must be bytes")
        return update, stats
    values, _ = from_array_record(reply.content.array_records["arrays"], server.layout)
    metrics = reply.content.metric_records["metrics"]
    samples, loss = metrics.get("num-examples"), metrics.get("train_loss", 0.0)
    if not isinstance(samples, int) or not 0 < samples < 2**31:
        raise ProtocolError(f"dense reply's num-examples is {samples!r}")
    if not isinstance(loss, int | float) or not abs(loss) < 3e38:
        raise ProtocolError(f"dense reply's train_loss is {loss!r}")
    message = FedMapMessage(
        UPLINK,
        round,
        server.model.version,
        pack(values, server.model.mask),
        server.dtype,
        num_samples=samples,
        train_loss=float(loss),
    )
    return encode(message, server.layout.fingerprint).data, None


def uplink_entry(
    reply: Message,
    node: Node,
    data: bytes,
    round: int,
    message: FedMapMessage | None,
    server: Server,
) -> LedgerEntry:
    """What the node sent, priced on the mask its values use (the model's if refused)."""
    mask = server.model.mask if message is None else server.reply_mask(message)
    if node.dense:  # charged what it really sent: every tensor, dense
        _, nbytes = from_array_record(reply.content.array_records["arrays"], server.layout)
        return dense_entry(
            nbytes, round=round, client=node.client, direction="up", mask=mask, dtype=server.dtype
        )
    return ledger_entry(
        measured(data),
        round=round,
        client=node.client,
        direction="up",
        mask=mask,
        dtype=server.dtype,
    )


def measured(data: bytes) -> Encoded:
    """How received bytes split for the ledger; garbage is charged whole, as values."""
    try:
        return measure(data)
    except CodecError:
        return Encoded(data, 0, len(data))


def reported_cost(reply: Message) -> dict[str, float]:
    """The cost a node reports for its local round (nothing if absent or malformed)."""
    if reply.has_error() or "cost" not in reply.content.metric_records:
        return {}
    cost = reply.content.metric_records["cost"]
    names = {"cpu_s": "cpu-s", "train_s": "train-s", "peak_rss_mb": "peak-rss-mb"}
    values = {field: cost.get(key) for field, key in names.items()}
    if not all(isinstance(v, int | float) and math.isfinite(v) for v in values.values()):
        return {}
    return {field: float(v) for field, v in values.items()}  # type: ignore[arg-type]
