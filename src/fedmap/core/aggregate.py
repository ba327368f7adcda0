"""Aggregation over packed vectors.

Every client in step trains the same support, so a plain coordinate-wise rule over
packed vectors is FedAvg restricted to the mask: no per-coordinate counts, no
mask bookkeeping. The weighted mean accumulates in float64 so that the result does
not depend on how many clients took part beyond float32's last bit.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

AGGREGATION_RULES: tuple[str, ...] = ("mean", "median", "trimmed_mean")


def weighted_mean(vectors: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """FedAvg: ``sum_i w_i x_i / sum_i w_i`` (float32 result, float64 accumulation)."""
    _check(vectors, weights)
    total = float(sum(weights))
    if total <= 0:
        raise ValueError(f"aggregation weights must sum to a positive number, got {total}")
    acc = torch.zeros(vectors[0].shape, dtype=torch.float64)
    for vector, weight in zip(vectors, weights, strict=True):
        acc.add_(vector.to(torch.float64), alpha=float(weight))
    return (acc / total).to(torch.float32)


def coordinate_median(vectors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Coordinate-wise median (mean of the two middle values for an even count)."""
    _check(vectors, [1.0] * len(vectors))
    ordered = torch.sort(torch.stack(list(vectors)), dim=0).values  # (clients, kept)
    count = len(vectors)
    middle = ordered[(count - 1) // 2 : count // 2 + 1].double()  # one row (odd) or two (even)
    return middle.mean(dim=0).to(torch.float32)


def trimmed_mean(vectors: Sequence[torch.Tensor], trim_fraction: float) -> torch.Tensor:
    """Coordinate-wise mean after dropping the ``trim_fraction`` largest and smallest values."""
    _check(vectors, [1.0] * len(vectors))
    if not 0.0 <= trim_fraction < 0.5:
        raise ValueError(f"aggregation.trim_fraction: expected [0, 0.5), got {trim_fraction}")
    cut = int(trim_fraction * len(vectors))
    ordered = torch.sort(torch.stack(list(vectors)).double(), dim=0).values  # (clients, kept)
    return ordered[cut : len(vectors) - cut].mean(dim=0).to(torch.float32)


def aggregate(
    vectors: Sequence[torch.Tensor], weights: Sequence[float], rule: str, trim_fraction: float = 0.1
) -> torch.Tensor:
    """Apply the configured aggregation ``rule`` (sample counts weigh only the mean)."""
    if rule == "mean":
        return weighted_mean(vectors, weights)
    if rule == "median":
        return coordinate_median(vectors)
    if rule == "trimmed_mean":
        return trimmed_mean(vectors, trim_fraction)
    raise ValueError(f"aggregation.rule: expected one of {AGGREGATION_RULES}, got {rule!r}")


def _check(vectors: Sequence[torch.Tensor], weights: Sequence[float]) -> None:
    if not vectors:
        raise ValueError("cannot aggregate zero client updates")
    if len(vectors) != len(weights):
        raise ValueError(f"{len(vectors)} vectors but {len(weights)} weights")
    shape = vectors[0].shape
    for vector in vectors:
        if vector.shape != shape:
            raise ValueError(
                f"packed vectors differ in shape: {tuple(shape)} vs {tuple(vector.shape)}"
            )


def masked_mean(
    dense: Sequence[torch.Tensor], keeps: Sequence[torch.Tensor], weights: Sequence[float]
) -> tuple[torch.Tensor, torch.Tensor]:
    """FedAvg where each client kept its own coordinates (client-local masks, FedDST).

    Each coordinate is the sample-weighted mean over the clients whose mask kept it,
    and 0.0 where none did. Returns the values and the weighted vote of each
    coordinate (the summed weights of the clients that kept it), which mask
    aggregation ranks by.
    """
    _check(dense, weights)
    acc = torch.zeros(dense[0].shape, dtype=torch.float64)
    votes = torch.zeros(dense[0].shape, dtype=torch.float64)
    for vector, keep, weight in zip(dense, keeps, weights, strict=True):
        acc.add_(vector.to(torch.float64) * keep, alpha=float(weight))
        votes.add_(keep.to(torch.float64), alpha=float(weight))
    values = torch.where(votes > 0, acc / votes.clamp_min(1e-300), 0.0)
    return values.to(torch.float32), votes
