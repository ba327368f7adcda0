"""Magnitude pruning with an exact count and a deterministic tie-break.

Every party runs :func:`compute_mask` on the same values and must get the same
bits, so the ranking is exact: a stable sort of ``|w|`` over the candidates in
canonical order, which prunes, among equal magnitudes, the lower flat index
first. No thresholds (``|w| < t`` would keep or drop whole groups of ties).
"""

from __future__ import annotations

import math
import zlib
from typing import Literal

import numpy as np
import torch

from fedmap.core.mask import Mask
from fedmap.errors import ProtocolError

Scope = Literal["global", "layer"]
Ranking = Literal["magnitude", "random"]
SCOPES: tuple[str, ...] = ("global", "layer")  # what pruning.scope accepts
RANKINGS: tuple[str, ...] = ("magnitude", "random")  # what pruning.ranking accepts


def num_to_prune(num_kept: int, rate: float) -> int:
    """How many of ``num_kept`` weights a step at ``rate`` removes: ``floor(rate*n + 1/2)``."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"prune rate must be in [0, 1], got {rate}")
    return min(num_kept, math.floor(rate * num_kept + 0.5))


def kept_for_density(total: int, density: float) -> int:
    """How many of ``total`` weights ``density`` keeps: ``floor(density*n + 1/2)``.

    One rule for every party: a client's own prune and the server's check of its
    count must agree to the weight.
    """
    return math.floor(density * total + 0.5)


def compute_mask(
    values: torch.Tensor,
    mask: Mask,
    rate: float,
    scope: Scope = "global",
    ranking: Ranking = "magnitude",
) -> Mask:
    """Remove the fraction ``rate`` of the still-kept prunable weights that rank lowest.

    Parameters
    ----------
    values
        Canonical vector (numel,) of the model the step is computed from. Pruned
        coordinates are ignored whatever they hold.
    mask
        The current mask; the result is always a subset of it.
    rate
        Fraction of the remaining prunable weights to remove (not of all weights).
    scope
        ``"global"`` ranks all prunable tensors together; ``"layer"`` removes ``rate``
        of each tensor's remaining weights separately.
    ranking
        ``"magnitude"`` removes the smallest ``|w|``; ``"random"`` ranks by
        :func:`random_scores` instead (the control of ``pruning.method = "random"``),
        which every party still derives identically.

    Returns
    -------
    Mask
        The new, nested mask.
    """
    if values.shape != mask.flat.shape:
        raise ProtocolError(f"expected {mask.flat.numel()} values, got {values.numel()}")
    if ranking not in RANKINGS:
        raise ValueError(f"pruning.ranking: expected one of {RANKINGS}, got {ranking!r}")
    if scope not in SCOPES:
        raise ValueError(f"pruning.scope: expected one of {SCOPES}, got {scope!r}")
    magnitude = values.detach().to("cpu", torch.float32).abs()
    if not bool(torch.isfinite(magnitude).all()):
        raise ProtocolError("cannot rank non-finite values for pruning")
    scores = random_scores(values, mask) if ranking == "random" else magnitude
    candidates = mask.flat & mask.layout.prunable_flat
    new_flat = mask.flat.clone()
    if scope == "global":
        clear_smallest(scores, candidates, new_flat, rate=rate)
    else:
        for i, is_prunable in enumerate(mask.layout.prunable):
            if is_prunable:
                part = mask.layout.slice_of(i)
                clear_smallest(scores[part], candidates[part], new_flat[part], rate=rate)
    return Mask(mask.layout, new_flat)


def random_scores(values: torch.Tensor, mask: Mask) -> torch.Tensor:
    """Uniform scores every party can recompute, independent of the magnitudes.

    The generator is seeded from the kept values' bytes and their count: every
    party holds exactly these values (the agreement invariant), so all draw the
    same scores; two seeds or two steps draw different ones. Ranking by them
    ignores ``|w|`` entirely, which is the point of the control.
    """
    kept = values.detach().to("cpu", torch.float32)[mask.flat].contiguous()
    seed = [zlib.crc32(kept.numpy().tobytes()), mask.num_kept]
    scores = np.random.default_rng(seed).random(values.numel(), dtype=np.float32)
    return torch.from_numpy(scores)


def keep_top(scores: torch.Tensor, candidates: torch.Tensor, count: int, base: Mask) -> Mask:
    """``base`` less ``candidates``, plus the ``count`` candidates with the largest scores.

    Ties go to the lower flat index, as in :func:`compute_mask`. Used where a mask
    is chosen afresh (one-shot to a size, regrowth, vote counts), not nested.
    """
    index = candidates.nonzero().squeeze(1)
    count = max(0, min(count, index.numel()))
    flat = base.flat & ~candidates
    if count:
        order = torch.sort(-scores[index].to(torch.float64), stable=True).indices
        flat[index[order[:count]]] = True
    return Mask(base.layout, flat)


def prune_to_density(
    values: torch.Tensor, mask: Mask, density: float, scope: Scope = "global"
) -> Mask:
    """Keep ``round(density * num_prunable)`` weights of ``mask`` by magnitude (a subset of it).

    With ``scope="layer"`` each tensor keeps that share of its own weights. A mask
    already at or below the density is returned unchanged.
    """
    layout = mask.layout
    if scope == "layer":
        flat = mask.flat.clone()
        for i, is_prunable in enumerate(layout.prunable):
            if is_prunable:
                part = layout.slice_of(i)
                kept = int(flat[part].sum())
                target = kept_for_density(flat[part].numel(), density)
                if kept > target:
                    clear_smallest(
                        values.detach().abs()[part], flat[part].clone(), flat[part], kept - target
                    )
        return Mask(layout, flat)
    kept = mask.num_kept_prunable
    target = kept_for_density(layout.num_prunable, density)
    if kept <= target:
        return mask
    new_flat = mask.flat.clone()
    candidates = mask.flat & layout.prunable_flat
    clear_smallest(values.detach().to("cpu").abs(), candidates, new_flat, kept - target)
    return Mask(layout, new_flat)


def clear_smallest(
    scores: torch.Tensor,
    candidates: torch.Tensor,
    out: torch.Tensor,
    count: int | None = None,
    *,
    rate: float = 1.0,
) -> None:
    """Clear in ``out`` the ``count`` candidates with the smallest ``scores``.

    Without ``count``, ``num_to_prune(candidates, rate)`` of them. Ties go to the
    lower flat index.
    """
    index = candidates.nonzero().squeeze(1)  # (n,) ascending flat indices
    count = num_to_prune(index.numel(), rate) if count is None else min(count, index.numel())
    if count == 0:
        return
    out[index[smallest(scores[index], count)]] = False


def smallest(values: torch.Tensor, count: int) -> torch.Tensor:
    """Positions of the ``count`` smallest ``values``; among equal values the lower positions.

    Exactly the first ``count`` of a stable ascending sort, found in linear time: the
    ``count``-th smallest value splits the vector into those strictly below it (all
    taken) and its ties (taken in position order until ``count`` is reached).
    """
    if count <= 0:
        return torch.zeros(0, dtype=torch.long)
    if count >= values.numel():
        return torch.arange(values.numel())
    kth = torch.kthvalue(values, count).values
    chosen = values < kth
    missing = count - int(chosen.sum())
    ties = (values == kth).nonzero().squeeze(1)[:missing]
    chosen[ties] = True
    return chosen.nonzero().squeeze(1)
