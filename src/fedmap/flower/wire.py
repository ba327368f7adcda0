"""What travels in a Flower message, and how many bytes Flower really moves for it.

FedMap's codec bytes ride in one ``ConfigRecord`` value, so Flower adds no copy of
the tensors, only its own framing: the message metadata, one object per record
and the 64-character id of every object. :func:`flower_nbytes` counts exactly the
objects Flower pushes and pulls for a message (each object's deflated body plus its
id); what it does not count is per-request gRPC, HTTP/2 and TLS framing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

from fedmap.core.layout import Layout
from fedmap.errors import ProtocolError

RECORD = "fedmap"  # the ConfigRecord that carries codec bytes and the round's instructions
TRAIN = "train.fedmap"  # a FedMap round for a FedMap client
HELLO = "query.fedmap_hello"  # who are you: partition, mask version (a plain client errors)
DENSE_TRAIN = "train"  # the plain Flower convention: "arrays" in, "arrays" + "metrics" out
OBJECT_ID_NBYTES = 64  # hex SHA-256: every pushed or pulled object is named by it
# Flower's framing of one FedMap message (metadata, records, object ids, the node's
# cost metrics): measured at 507 bytes down and 829 up on flwr 1.42; the bound leaves
# room for longer node ids, error texts and run ids.
FRAMING_BOUND_NBYTES = 1024


def flower_nbytes(message: Message) -> int:
    """Bytes of the objects Flower transfers for ``message`` (bodies plus their ids).

    Flower 1.42 moves a message as a tree of content-addressed objects (the
    message's metadata, its RecordDict, each record, each array chunk). Each is
    sent once per transfer, so duplicates inside one message are counted once.
    """
    objects = get_all_nested_objects(message)
    return sum(len(obj.deflate()) + OBJECT_ID_NBYTES for obj in objects.values())


def fedmap_content(fields: dict[str, Any]) -> RecordDict:
    """A RecordDict with FedMap's one ConfigRecord (codec bytes and scalars)."""
    return RecordDict({RECORD: ConfigRecord(fields)})


def fedmap_fields(message: Message) -> dict[str, Any]:
    """The FedMap record of a received message; a clear error when it has none."""
    if message.has_error():
        raise ProtocolError(f"message carries an error: {message.error.reason}")
    content = message.content
    if RECORD not in content.config_records:
        raise ProtocolError(f"message has no {RECORD!r} record (a plain Flower client?)")
    return dict(content.config_records[RECORD])


def to_array_record(values: torch.Tensor, layout: Layout) -> ArrayRecord:
    """A canonical vector as named dense arrays, the way a plain Flower client expects."""
    tensors = layout.unflatten(values)
    return ArrayRecord({name: t.detach().cpu().contiguous() for name, t in tensors.items()})


def from_array_record(record: ArrayRecord, layout: Layout) -> tuple[torch.Tensor, int]:
    """A dense client's arrays as a canonical float32 vector, and their size in bytes.

    Every transmitted tensor must be present with its shape; extra entries are
    refused, so a reply for another model cannot be folded in by name.
    """
    names = set(record.keys())
    expected = set(layout.names)
    if names != expected:
        missing, extra = sorted(expected - names), sorted(names - expected)
        raise ProtocolError(f"dense reply's arrays differ: missing {missing}, unexpected {extra}")
    tensors, nbytes = {}, 0
    for name, shape in zip(layout.names, layout.shapes, strict=True):
        array = np.asarray(record[name].numpy())
        if tuple(array.shape) != tuple(shape):
            raise ProtocolError(f"dense reply's {name} has shape {array.shape}, expected {shape}")
        nbytes += array.nbytes
        tensors[name] = torch.from_numpy(array.astype(np.float32, copy=False))
    return layout.flatten(tensors), nbytes
