"""Exact byte accounting: what each message cost, and what other encodings would have.

Every entry is measured from an :class:`~fedmap.core.codec.Encoded` message, so the
ledger equals the bytes on the wire by construction. Beside it, each entry records
what the same payload would cost as

* ``dense``: dense FedAvg, every transmitted scalar;
* ``bitmap``: the kept values plus a one-bit-per-prunable-weight mask;
* ``coo``: kept prunable weights as (int32 index, value) pairs plus the dense rest.

The alternatives use the same value dtype and the same header, so differences come
from the sparsity encoding alone.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from fedmap.core.codec import Encoded, itemsize
from fedmap.core.mask import Mask

COO_INDEX_NBYTES = 4


@dataclass(frozen=True)
class LedgerEntry:
    """Bytes of one message between the server and one client."""

    round: int
    client: int
    direction: str  # "up" (client to server) or "down"
    header: int
    mask: int
    values: int
    total: int
    dense: int
    bitmap: int
    coo: int


def ledger_entry(
    encoded: Encoded, *, round: int, client: int, direction: str, mask: Mask, dtype: str
) -> LedgerEntry:
    """Measure ``encoded`` and price the alternatives for the same ``mask``.

    ``mask`` is the mask the message's values are packed with.
    """
    size = itemsize(dtype)
    layout = mask.layout
    kept_prunable = mask.num_kept_prunable
    dense_rest = layout.numel - layout.num_prunable
    header = encoded.header_nbytes
    return LedgerEntry(
        round=round,
        client=client,
        direction=direction,
        header=header,
        mask=encoded.mask_nbytes,
        values=encoded.values_nbytes,
        total=len(encoded.data),
        dense=header + layout.numel * size,
        bitmap=header + (layout.num_prunable + 7) // 8 + mask.num_kept * size,
        coo=header + kept_prunable * (COO_INDEX_NBYTES + size) + dense_rest * size,
    )


def statistics_entry(encoded: Encoded, update: LedgerEntry) -> LedgerEntry:
    """Price a statistics message (PruneFL's importance) sent beside the reply ``update``.

    Dense FedAvg, the reference, sends no such message (``dense = 0``); every other
    coding of the method sends it whole.
    """
    total = len(encoded.data)
    return replace(
        update,
        header=encoded.header_nbytes,
        mask=0,
        values=encoded.values_nbytes,
        total=total,
        dense=0,
        bitmap=total,
        coo=total,
    )


def dense_entry(
    nbytes: int, *, round: int, client: int, direction: str, mask: Mask, dtype: str
) -> LedgerEntry:
    """A message of a plain dense Flower client: ``nbytes`` of tensors, no header, no mask.

    The alternatives are priced as for any message on ``mask``, so the columns stay
    comparable; ``total`` is what the dense client really sent or received.
    """
    priced = ledger_entry(
        Encoded(b"", 0, 0), round=round, client=client, direction=direction, mask=mask, dtype=dtype
    )
    return replace(priced, header=0, mask=0, values=nbytes, total=nbytes)


@dataclass(frozen=True)
class RoundBytes:
    """Sums of a round's entries, one field per ledger column."""

    up: int
    down: int
    mask: int
    header: int
    dense: int
    bitmap: int
    coo: int

    @property
    def total(self) -> int:
        """Bytes up plus bytes down."""
        return self.up + self.down


def sum_entries(entries: Iterable[LedgerEntry]) -> RoundBytes:
    """Add up a round's entries."""
    up = down = mask = header = dense = bitmap = coo = 0
    for entry in entries:
        if entry.direction == "up":
            up += entry.total
        else:
            down += entry.total
        mask += entry.mask
        header += entry.header
        dense += entry.dense
        bitmap += entry.bitmap
        coo += entry.coo
    return RoundBytes(up, down, mask, header, dense, bitmap, coo)


def append_csv(path: Path, entries: Iterable[Any], row_type: type = LedgerEntry) -> None:
    """Append dataclass rows (ledger entries by default) to ``path``; header when new."""
    names = [f.name for f in fields(row_type)]
    is_new = not path.exists()
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=names)
        if is_new:
            writer.writeheader()
        writer.writerows(asdict(e) for e in entries)
