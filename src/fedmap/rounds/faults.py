"""Simulated client faults: dropouts, stragglers past a deadline, and hostile updates.

Every draw comes from a generator keyed by ``(seed, round, attempt)``, never from a
global one, so a faulty run is exactly reproducible and resumes bit for bit.

The timing model is deliberately simple and documented (docs/reliability.md): a
responsive client answers after ``U(0.8, 1.2)`` simulated seconds (one nominal
local round), a straggler after ``U(2, 10)`` times that. The server closes the
round at ``deadline_s``; a late reply is cancelled and never sent. A dropped client
received its downlink and then went offline: it never replies and, having crashed
mid-round, keeps the state it held before the round (so it can miss a prune step
and need a bootstrap later).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

ATTACKS: tuple[str, ...] = ("none", "scale", "sign_flip")
_NOMINAL_S = (0.8, 1.2)
_STRAGGLER_SLOWDOWN = (2.0, 10.0)


@dataclass(frozen=True)
class FaultModel:
    """What goes wrong, and how the server copes (the ``[faults]`` config section)."""

    dropout: float = 0.0  # probability that a sampled client never replies
    straggler_fraction: float = 0.0  # probability that a sampled client is slow
    deadline_s: float = math.inf  # the server stops waiting after this many simulated seconds
    min_clients: int = 1  # fewer valid replies than this: the round is retried
    max_attempts: int = 10  # retries before the run fails
    attack: str = "none"  # what attackers do to their update (ATTACKS)
    attackers: frozenset[int] = frozenset()  # client ids that attack
    attack_scale: float = 10.0

    def __post_init__(self) -> None:
        if self.attack not in ATTACKS:
            raise ValueError(f"faults.attack: expected one of {ATTACKS}, got {self.attack!r}")


@dataclass(frozen=True)
class Fate:
    """One sampled client's fate in one attempt of a round."""

    dropped: bool
    latency_s: float  # simulated seconds until its reply would arrive

    def late(self, deadline_s: float) -> bool:
        """The reply would arrive after the server closed the round."""
        return not self.dropped and self.latency_s > deadline_s


def client_fates(
    faults: FaultModel, seed: int, round: int, attempt: int, cohort: Sequence[int]
) -> dict[int, Fate]:
    """Draw every cohort member's fate; one generator per (seed, round, attempt)."""
    rng = np.random.default_rng([seed, round, attempt, 0xFA17])
    count = len(cohort)
    dropped = rng.random(count) < faults.dropout
    slow = rng.random(count) < faults.straggler_fraction
    latency = rng.uniform(*_NOMINAL_S, size=count)
    slowdown = np.where(slow, rng.uniform(*_STRAGGLER_SLOWDOWN, size=count), 1.0)
    return {
        client: Fate(bool(dropped[i]), float(latency[i] * slowdown[i]))
        for i, client in enumerate(cohort)
    }


def round_duration(fates: Sequence[Fate], deadline_s: float) -> float:
    """Simulated seconds until the server closes an attempt.

    It waits for the slowest reply it will get, or until the deadline if some reply
    is late. A dropout is noticed at once (Flower's heartbeat makes it minutes; we
    do not charge that here).
    """
    arrivals = [f.latency_s for f in fates if not f.dropped]
    if not arrivals:
        return 0.0
    return min(max(arrivals), deadline_s)


def choose_attackers(num_clients: int, fraction: float, seed: int) -> frozenset[int]:
    """A fixed set of ``round(fraction * num_clients)`` hostile client ids, fixed by the seed."""
    count = min(num_clients, math.floor(fraction * num_clients + 0.5))
    rng = np.random.default_rng([seed, 0xBAD])
    return frozenset(int(c) for c in rng.choice(num_clients, size=count, replace=False))


def attack_update(
    trained: torch.Tensor, start: torch.Tensor, attack: str, scale: float
) -> torch.Tensor:
    """A hostile client's packed reply: its honest update scaled, or flipped and scaled.

    ``scale`` boosts the update ``trained - start`` (model replacement); ``sign_flip``
    sends ``-scale`` times it (pushing the model uphill). Both are valid messages: only
    the norm screen or a robust aggregation rule can stop them.
    """
    delta = trained - start
    if attack == "scale":
        return start + scale * delta
    if attack == "sign_flip":
        return start - scale * delta
    if attack == "none":
        return trained
    raise ValueError(f"faults.attack: expected one of {ATTACKS}, got {attack!r}")
