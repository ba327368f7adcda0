"""One attempt's bookkeeping, written once for every transport.

A transport delivers downlinks and collects replies its own way; what it records
is the same everywhere: each message's ledger entry, each client's fate as an
event with its reason, the counts the metrics show, and every reply validated by
the protocol's server and screened with the cohort. :class:`AttemptLog` does that
and hands the loop one frozen :class:`~fedmap.rounds.records.AttemptResult`.
"""

from __future__ import annotations

from collections import Counter

from fedmap.core.codec import Encoded, Message
from fedmap.core.ledger import LedgerEntry, ledger_entry
from fedmap.core.mask import Mask
from fedmap.errors import UpdateRejected
from fedmap.protocol.server import Server
from fedmap.rounds.records import AttemptResult, Counts, Event


class AttemptLog:
    """Collects what happens in attempt ``attempt`` of round ``round``.

    Parameters
    ----------
    server
        The protocol's server: it prices and validates what the log records.
    round, attempt
        Which attempt this is.
    """

    def __init__(self, server: Server, round: int, attempt: int) -> None:
        self.server = server
        self.round = round
        self.attempt = attempt
        self.ledger: list[LedgerEntry] = []
        self.events: list[Event] = []
        self.counts: Counter[str] = Counter()

    def event(self, client: int, kind: str, reason: str, *, counted: bool = True) -> None:
        """Record an event; dropped, late and rejected clients are also counted.

        Not when ``counted`` is False: a refused side message whose update stands, or
        a Flower node that holds no partition yet.
        """
        self.events.append(Event(self.round, self.attempt, client, kind, reason))
        if counted and kind in ("dropped", "late", "rejected"):
            self.counts[kind] += 1

    def sampled(self, count: int) -> None:
        """``count`` more clients were asked to take part in this attempt."""
        self.counts["sampled"] += count

    def charge(self, *entries: LedgerEntry) -> None:
        """Add messages to the ledger."""
        self.ledger += entries

    def downlink(self, client: int, version: int) -> tuple[Encoded, Mask]:
        """The downlink for ``client`` holding mask ``version``, charged; ``client`` may reply."""
        encoded, mask = self.server.downlink(version, client)
        self.charge(
            ledger_entry(
                encoded,
                round=self.round,
                client=client,
                direction="down",
                mask=mask,
                dtype=self.server.dtype,
            )
        )
        self.counts["bootstraps"] += encoded.mask_nbytes > 0
        return encoded, mask

    def read(self, client: int, update: bytes) -> Message | None:
        """Validate ``client``'s update with the server; a refusal becomes an event (None)."""
        try:
            return self.server.read_reply(update, client)
        except UpdateRejected as error:
            self.event(client, "rejected", str(error))
            return None

    def read_statistics(self, client: int, statistics: bytes) -> None:
        """Validate an accepted client's statistics; if refused its update stands, uncounted."""
        try:
            self.server.read_statistics(statistics, client)
        except UpdateRejected as error:  # only its scores are lost
            self.event(client, "rejected", str(error), counted=False)

    def screen(self, accepted: list[tuple[int, Message]]) -> list[tuple[int, Message]]:
        """The cohort-level norm screen; refusals and capped counts become events."""
        screening = self.server.screen(accepted)
        for client, reason in screening.rejected:
            self.event(client, "rejected", reason)
        for client, reason in screening.capped:
            self.event(client, "capped", reason)
        return screening.accepted

    def result(self, accepted: list[tuple[int, Message]], participants: list[int]) -> AttemptResult:
        """The attempt as the loop sees it."""
        counts = Counts(**{k: v for k, v in self.counts.items()})
        return AttemptResult(
            tuple(accepted), tuple(participants), tuple(self.ledger), tuple(self.events), counts
        )
