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

from fedmap.core.layout import Layout
from fedmap.core.mask import Mask
from fedmap.errors import ProtocolError

Scope = Literal["global", "layer", "random"]
SCOPES: tuple[str, ...] = ("global", "layer")  # what pruning.scope accepts
RANDOM = "random"  # the random-pruning control's instruction scope (pruning.method = "random")


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


def compute_mask(values: torch.Tensor, mask: Mask, rate: float, scope: Scope = "global") -> Mask:
    """Remove the fraction ``rate`` of the still-kept prunable weights with the smallest ``|w|``.

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
        of each tensor's remaining weights separately; ``"random"`` ranks by
        :func:`random_scores` instead of magnitude (the control of ``pruning.method =
        "random"``), so every party still derives the same mask.

    Returns
    -------
    Mask
        The new, nested mask.
    """
    if values.shape != mask.flat.shape:
        raise ProtocolError(f"expected {mask.flat.numel()} values, got {values.numel()}")
    magnitude = values.detach().to("cpu", torch.float32).abs()
    if not bool(torch.isfinite(magnitude).all()):
        raise ProtocolError("cannot rank non-finite values for pruning")
    candidates = mask.flat & mask.layout.prunable_flat
    new_flat = mask.flat.clone()
    if scope == RANDOM:
        _prune_candidates(random_scores(values, mask), candidates, rate, new_flat)
    elif scope == "global":
        _prune_candidates(magnitude, candidates, rate, new_flat)
    elif scope == "layer":
        for i, is_prunable in enumerate(mask.layout.prunable):
            if is_prunable:
                part = mask.layout.slice_of(i)
                _prune_candidates(magnitude[part], candidates[part], rate, new_flat[part])
    else:
        raise ValueError(f"pruning.scope: expected one of {SCOPES}, got {scope!r}")
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
                    _prune_candidates(
                        values.detach().abs()[part],
                        flat[part].clone(),
                        1.0,
                        flat[part],
                        kept - target,
                    )
        return Mask(layout, flat)
    kept = mask.num_kept_prunable
    target = kept_for_density(layout.num_prunable, density)
    if kept <= target:
        return mask
    new_flat = mask.flat.clone()
    candidates = mask.flat & layout.prunable_flat
    _prune_candidates(values.detach().to("cpu").abs(), candidates, 1.0, new_flat, kept - target)
    return Mask(layout, new_flat)


def _prune_candidates(
    magnitude: torch.Tensor,
    candidates: torch.Tensor,
    rate: float,
    out: torch.Tensor,
    count: int | None = None,
) -> None:
    """Clear in ``out`` the ``num_to_prune`` (or ``count``) smallest candidates.

    Ties go to the lower flat index.
    """
    index = candidates.nonzero().squeeze(1)  # (n,) ascending flat indices
    count = num_to_prune(index.numel(), rate) if count is None else min(count, index.numel())
    if count == 0:
        return
    out[index[smallest(magnitude[index], count)]] = False


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


def prunefl_adjust(
    values: torch.Tensor,
    importance: torch.Tensor,
    mask: Mask,
    min_kept: int,
    max_decrease: float,
) -> Mask:
    """PruneFL's reconfiguration at a bounded size: drop by magnitude, refill by importance.

    As the reference code's ``process_layer``: in every prunable tensor the
    ``int(max_decrease * kept)`` kept weights with the smallest ``|w|`` become
    candidates, beside every weight not kept; the rest stay. PruneFL then adds
    candidates back in order of importance (squared gradients) while that pays for
    their compute time; here the refill is by importance alone, up to ``min_kept``
    weights in all (none when the survivors already reach it), so a caller holds the
    size at the target. A refilled weight that was pruned before starts from 0.0.

    Parameters
    ----------
    values
        Canonical vector of the model the magnitudes come from.
    importance
        Canonical vector (numel,) of scores; only prunable coordinates are read.
    mask
        The current mask.
    min_kept
        Prunable weights to keep at least (the survivors are all kept when more).
    max_decrease
        Share of each tensor's kept weights that may leave by magnitude.
    """
    if not 0.0 <= max_decrease <= 1.0:
        raise ValueError(f"max_decrease must be in [0, 1], got {max_decrease}")
    layout = mask.layout
    magnitude = values.detach().to("cpu", torch.float32).abs()
    survivors = mask.flat.clone()
    for i, is_prunable in enumerate(layout.prunable):
        if is_prunable:
            part = layout.slice_of(i)
            kept = int(survivors[part].sum())
            _prune_candidates(
                magnitude[part],
                survivors[part].clone(),
                1.0,
                survivors[part],
                int(max_decrease * kept),
            )
    base = Mask(layout, survivors)
    refill = min_kept - base.num_kept_prunable
    candidates = layout.prunable_flat & ~survivors
    return keep_top(importance.detach().to("cpu"), candidates, max(refill, 0), base)


def erk_counts(layout: Layout, density: float) -> list[int]:
    """Weights each tensor keeps at ``density`` under FedDST's ``erk`` distribution.

    The reference (``PrunableNet._weights_by_layer``) gives layer ``i`` the raw
    sparsity ``1 - (n_in + n_out + Σk) / (n_in n_out Πk)`` (``Σk`` and ``Πk`` over
    the kernel, empty for a linear layer), scales all of them by one factor so that
    ``Σ s_i n_i = (1 - density) Σ n_i`` with ``n_i`` the layer's weights plus its
    bias, and keeps ``floor((1 - s_i) n_i)`` of the layer's weights. This is not
    RigL's ERK: it moves a little density from the large layers to the first
    convolution and the classifier (FedAvg CNN at 95 % sparsity: conv1 10 %,
    classifier 15 %, the others 5 %). Counts are clipped to [1, numel] where the
    scaling would leave a layer empty or overfull (the reference then leaves the
    layer dense). FedDST's server and clients both count by it. One entry per
    tensor of ``layout``; non-prunable tensors get 0.
    """
    sizes: list[int] = []
    raw: list[float] = []
    prunable = [i for i, p in enumerate(layout.prunable) if p]
    for i in prunable:
        shape = layout.shapes[i]
        n_out, n_in, kernel = shape[0], shape[1] if len(shape) > 1 else 1, shape[2:]
        fan = n_in * n_out * math.prod(kernel)
        raw.append(1.0 - (n_in + n_out + sum(kernel)) / fan)
        bias = layout.names[i].removesuffix("weight") + "bias"
        extra = math.prod(layout.shapes[layout.names.index(bias)]) if bias in layout.names else 0
        sizes.append(math.prod(shape) + extra)
    weighted = sum(s * n for s, n in zip(raw, sizes, strict=True))
    scale = (1.0 - density) * sum(sizes) / weighted if weighted != 0 else 0.0
    counts = [0] * len(layout.names)
    for i, s, n in zip(prunable, raw, sizes, strict=True):
        numel = math.prod(layout.shapes[i])
        counts[i] = min(numel, max(1, math.floor((1.0 - s * scale) * n)))
    return counts
