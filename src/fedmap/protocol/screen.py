"""The cohort-level screen: updates far outside the cohort's are refused, sample counts capped.

The yardstick is the median distance from the global model, robust to a minority
of attackers; a reply more than ``norm_threshold`` times it away is refused. Near
convergence most clients barely move while a few with harder data still do, so
the yardstick never drops below :data:`NORM_FLOOR` of the model's norm (without
that floor, honest clients were refused late in long runs). A claimed sample
count above ``norm_threshold`` times the median is capped there rather than
refused (honest label-skewed clients can hold 10x the median), so no one reply
can buy the FedAvg weights. Cohorts smaller than three are not screened: their
median is no reference.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from fedmap.core.codec import Message

MIN_COHORT_FOR_NORM_SCREEN = 3  # a median of fewer norms says nothing about outliers
NORM_FLOOR = 0.01  # distances below this share of the model's own norm are never outliers


@dataclass(frozen=True)
class Screening:
    """What the screen let through, refused, and capped (with the reasons)."""

    accepted: list[tuple[int, Message]]
    rejected: list[tuple[int, str]]
    capped: list[tuple[int, str]]  # accepted, but their sample count was capped


def screen_by_norm(
    replies: Sequence[tuple[int, Message]],
    start: torch.Tensor,
    dense: Callable[[Message], torch.Tensor],
    norm_threshold: float,
) -> Screening:
    """Screen validated ``replies`` against the global model's values ``start``.

    ``dense`` turns a reply into a canonical vector (its own mask, or the model's).
    """
    if not math.isfinite(norm_threshold) or len(replies) < MIN_COHORT_FOR_NORM_SCREEN:
        return Screening(list(replies), [], [])
    origin = start.double()
    norms = [float(torch.linalg.vector_norm(dense(m).double() - origin)) for _, m in replies]
    floor = NORM_FLOOR * float(torch.linalg.vector_norm(origin))
    limit = norm_threshold * max(statistics.median(norms), floor)
    most = max(1, math.floor(norm_threshold * statistics.median(m.num_samples for _, m in replies)))
    accepted, rejected, capped = [], [], []
    for (client, message), norm in zip(replies, norms, strict=True):
        if norm > limit:
            rejected.append((client, f"update norm {norm:.4g} exceeds {limit:.4g}"))
            continue
        if message.num_samples > most:
            capped.append((client, f"sample count {message.num_samples} capped to {most}"))
            message = dataclasses.replace(message, num_samples=most)
        accepted.append((client, message))
    return Screening(accepted, rejected, capped)
