"""How a round's messages reach a cohort: the one call the round loop makes.

The loop fixes the cohort and the simulated fates; a transport delivers each
member its downlink, gets the replies back and returns them validated and
screened, with every message charged and every fate recorded
(:class:`~fedmap.rounds.attempt.AttemptLog`). Two implementations:
:class:`~fedmap.rounds.inprocess.InProcessTransport` (an engine trains the cohort in
this process; dropouts, stragglers and attackers are simulated) and
:class:`~fedmap.flower.transport.FlowerTransport` (Flower's Grid carries the
messages to real nodes; every failure is real).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from fedmap.rounds.faults import Fate
from fedmap.rounds.records import AttemptResult, RoundEnd


@dataclass(frozen=True)
class AttemptRequest:
    """One attempt of a round: who is asked, and what the fault model has in store for them."""

    round: int
    attempt: int
    cohort: tuple[int, ...]  # sampled client ids, sorted
    fates: Mapping[int, Fate] = field(default_factory=dict)  # simulated (in-process only)


class Transport(Protocol):
    """Delivers one attempt of a round; see the module docstring."""

    columns: tuple[str, ...]
    """Metrics columns this transport adds to every row (after the standard ones)."""
    resumable: bool
    """Whether the clients' memory is this process's, so a checkpoint can hold it."""

    def run_attempt(self, request: AttemptRequest) -> AttemptResult:
        """Send the round to ``request.cohort``; return what came back, validated."""
        ...

    def end_round(self, round: int) -> RoundEnd:
        """Close the round that just ended: values of :attr:`columns` and lines of own files.

        Called once per round, after evaluation; what the transport sums over the run
        (its summary) moves on here.
        """
        ...

    def summary(self) -> dict[str, Any]:
        """Keys this transport adds to ``summary.json`` at the end of the run."""
        ...

    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """The clients' memory, for a checkpoint (resumable transports only)."""
        ...

    def load_state_dict(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        ...
