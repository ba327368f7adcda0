"""What a round and each of its attempts produce: typed, frozen records.

A transport returns one :class:`AttemptResult` per attempt; the loop folds the
attempts of a round into one :class:`RoundRecord`, which the run directory turns
into a metrics row, ledger lines and events.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from fedmap.core.codec import Message
from fedmap.core.ledger import LedgerEntry, RoundBytes
from fedmap.engines.evaluation import Evaluation

EVENT_KINDS = ("dropped", "late", "rejected", "capped", "discarded", "retry")


@dataclass(frozen=True)
class Event:
    """Something that went wrong with one client in one attempt of a round (``events.jsonl``)."""

    round: int
    attempt: int
    client: int  # -1: the round itself (a retry); a node id: a Flower node with no partition
    kind: str  # one of EVENT_KINDS
    reason: str


@dataclass(frozen=True)
class Counts:
    """Clients per fate in one attempt (summed over a round's attempts for the metrics)."""

    sampled: int = 0
    bootstraps: int = 0
    rejected: int = 0
    dropped: int = 0
    late: int = 0
    discarded: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(Counts)))


@dataclass(frozen=True)
class AttemptResult:
    """One attempt of a round as its transport delivered it."""

    accepted: tuple[tuple[int, Message], ...]  # validated and screened replies, client order
    participants: tuple[int, ...]  # clients that received the round and were due to answer
    ledger: tuple[LedgerEntry, ...]
    events: tuple[Event, ...]
    counts: Counts


@dataclass(frozen=True)
class RoundFile:
    """A round's lines of a file the transport adds to the run directory (a CSV of dataclasses)."""

    name: str  # e.g. "nodes.csv"
    row_type: type  # a dataclass: its fields are the columns
    rows: tuple[Any, ...]


@dataclass(frozen=True)
class RoundEnd:
    """What a transport adds to a round's record: metrics columns and lines of its own files."""

    columns: dict[str, Any] = field(default_factory=dict)
    files: tuple[RoundFile, ...] = ()


@dataclass(frozen=True)
class RoundRecord:
    """Everything measured in one round (the metrics row plus the ledger and events)."""

    round: int
    iteration: int
    density: float
    pruned: bool
    cohort: tuple[int, ...]
    evaluation: Evaluation
    train_loss: float
    bytes: RoundBytes
    bytes_cum: int
    wall_s: float
    ledger: tuple[LedgerEntry, ...]
    counts: Counts = Counts()
    answered: int = 0
    attempts: int = 1
    sim_time_s: float = 0.0
    events: tuple[Event, ...] = ()
    mask_sha: str = ""  # digest of the global mask after the round: runs compare masks by it
    extra: dict[str, Any] = field(default_factory=dict)  # the transport's own columns
    files: tuple[RoundFile, ...] = ()  # the transport's own per-round files
