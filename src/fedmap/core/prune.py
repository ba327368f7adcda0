"""Magnitude pruning with an exact count and a deterministic tie-break.

Every party runs :func:`compute_mask` on the same values and must get the same
bits, so the ranking is exact: a stable sort of ``|w|`` over the candidates in
canonical order, which prunes, among equal magnitudes, the lower flat index
first. No thresholds (``|w| < t`` would keep or drop whole groups of ties).
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from fedmap.core.mask import Mask
from fedmap.errors import ProtocolError

Scope = Literal["global", "layer"]
SCOPES: tuple[str, ...] = ("global", "layer")


def num_to_prune(num_kept: int, rate: float) -> int:
    """How many of ``num_kept`` weights a step at ``rate`` removes: ``floor(rate*n + 1/2)``."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"prune rate must be in [0, 1], got {rate}")
    return min(num_kept, math.floor(rate * num_kept + 0.5))


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
        of each tensor's remaining weights separately.

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
    if scope == "global":
        _prune_candidates(magnitude, candidates, rate, new_flat)
    elif scope == "layer":
        for i, is_prunable in enumerate(mask.layout.prunable):
            if is_prunable:
                part = mask.layout.slice_of(i)
                _prune_candidates(magnitude[part], candidates[part], rate, new_flat[part])
    else:
        raise ValueError(f"pruning.scope: expected one of {SCOPES}, got {scope!r}")
    return Mask(mask.layout, new_flat)


def _prune_candidates(
    magnitude: torch.Tensor, candidates: torch.Tensor, rate: float, out: torch.Tensor
) -> None:
    """Clear in ``out`` the ``num_to_prune`` smallest candidates (ties: lower index first)."""
    index = candidates.nonzero().squeeze(1)  # (n,) ascending flat indices
    count = num_to_prune(index.numel(), rate)
    if count == 0:
        return
    order = torch.sort(magnitude[index], stable=True).indices  # ties keep index order
    out[index[order[:count]]] = False
