"""Which clients a round samples: fixed by the seed, the round and the attempt."""

from __future__ import annotations

import math

import numpy as np


def sample_clients(
    num_clients: int,
    fraction: float,
    seed: int,
    round: int,
    attempt: int = 0,
    count: int | None = None,
) -> list[int]:
    """``max(1, round(fraction * num_clients))`` (or ``count``) distinct clients, sorted.

    One generator per (seed, round, attempt), never global state, so every front
    door and every resumed run draws the same cohorts.
    """
    count = cohort_size(num_clients, fraction) if count is None else min(count, num_clients)
    key = [seed, round, 0x5A] if attempt == 0 else [seed, round, 0x5A, attempt]
    rng = np.random.default_rng(key)
    return sorted(int(c) for c in rng.choice(num_clients, size=count, replace=False))


def cohort_size(num_clients: int, fraction: float) -> int:
    """Clients sampled per attempt."""
    return max(1, min(num_clients, round_half_up(fraction * num_clients)))


def round_half_up(value: float) -> int:
    """Round to the nearest integer, halves up (Python's round() goes to even)."""
    return math.floor(value + 0.5)
