"""What a client does to its trained model before replying, for the methods that need it.

FedMap's clients send their kept values and nothing else. The baselines it is
judged against do more on the client: client-local pruning prunes each client's
own model (so every client sends its own mask), FedDST drops and regrows weights
on the client (a new mask per client), PruneFL asks for the squared gradients of
every weight. The server names the work in a :class:`ClientTask`; this module does
it, the same way in the simulator and in any other front door.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fedmap.core.mask import Mask, pack
from fedmap.core.prune import erk_counts, prune_to_density


@dataclass(frozen=True)
class ClientTask:
    """The extra work of one round's clients (``None`` everywhere: FedMap's plain reply).

    Parameters
    ----------
    prune_to
        Client-local pruning: prune the trained model by magnitude, within the
        received mask, to this density of the prunable weights, and send that mask.
    drop_to
        FedDST: drop each tensor's kept weights with the smallest ``|w|`` down to
        its :func:`~fedmap.core.prune.erk_counts` at this density, regrow it to its
        received count where the dense gradient is largest, and send the new mask.
    importance
        PruneFL: also send the mean squared gradients of every prunable weight.
    initial_pruning
        PruneFL's round 1: reach ``prune_to`` by the iterative initial pruning of
        :mod:`fedmap.client.initial_pruning` instead of training and pruning once.
    """

    prune_to: float | None = None
    drop_to: float | None = None
    importance: bool = False
    initial_pruning: bool = False

    def __post_init__(self) -> None:
        if self.initial_pruning and self.prune_to is None:
            raise ValueError("an initial-pruning task needs the density to prune to (prune_to)")

    @property
    def initial_density(self) -> float | None:
        """The density the client's initial pruning reaches (None: not that task)."""
        return self.prune_to if self.initial_pruning else None

    @property
    def needs_gradients(self) -> bool:
        """Whether the engine must return dense gradient statistics."""
        return self.drop_to is not None or self.importance

    @property
    def sends_mask(self) -> bool:
        """Whether the reply carries the client's own mask."""
        return self.prune_to is not None or self.drop_to is not None


@dataclass(frozen=True)
class ClientUpdate:
    """What the client sends: values packed with ``mask``; ``own_mask`` when it must travel."""

    packed: torch.Tensor
    mask: Mask
    own_mask: bool
    importance: torch.Tensor | None = None  # (num_prunable,) mean squared gradients


def finish_client(
    task: ClientTask | None,
    packed: torch.Tensor,
    mask: Mask,
    grad_mean: torch.Tensor | None = None,
    grad_sq: torch.Tensor | None = None,
    chosen: Mask | None = None,
) -> ClientUpdate:
    """Apply ``task`` to a trained model (``packed`` with the received ``mask``).

    ``chosen`` is the mask an initial-pruning client reached while training (it
    replaces the one-step magnitude prune to ``task.prune_to``).
    """
    if task is None or not (task.sends_mask or task.importance):
        return ClientUpdate(packed, mask, own_mask=False)
    if task.needs_gradients and (grad_mean is None or grad_sq is None):
        raise ValueError("this round's client task needs the engine's gradient statistics")
    if task.initial_pruning and chosen is None:
        raise ValueError("this round's initial pruning needs the mask the engine's client chose")
    values = torch.zeros(mask.layout.numel, dtype=torch.float32)
    values[mask.flat] = packed.to(torch.float32)
    own = mask
    if task.initial_pruning:
        assert chosen is not None
        own = chosen
    elif task.prune_to is not None:
        own = prune_to_density(values, own, task.prune_to)
    grown = torch.zeros_like(own.flat)
    if task.drop_to is not None:
        assert grad_mean is not None
        own, grown = drop_and_regrow(values, grad_mean, own, task.drop_to)
    importance = None
    if task.importance:
        assert grad_sq is not None
        importance = grad_sq[mask.layout.prunable_flat].to(torch.float32)
    values = values.masked_fill(~own.flat | grown, 0.0)  # regrown weights start from 0.0
    return ClientUpdate(pack(values, own), own, own_mask=task.sends_mask, importance=importance)


def drop_and_regrow(
    values: torch.Tensor, gradient: torch.Tensor, mask: Mask, drop_to: float
) -> tuple[Mask, torch.Tensor]:
    """RigL's step per tensor, as FedDST's reference client runs it; also the grown weights.

    In every prunable tensor, drop the kept weights with the smallest ``|w|`` down
    to the tensor's :func:`~fedmap.core.prune.erk_counts` at ``drop_to`` (the
    reference's ``layer_prune`` at ``s + (1 - s) α``), then grow as many among the
    weights not kept after the drop, just-dropped ones included, where ``|gradient|``
    is largest (ties: lower index). Each tensor keeps its received count. The
    second result flags the grown weights, which start from 0.0 (the reference's
    ``layer_grow`` zeroes them), a just-dropped one included.
    """
    layout = mask.layout
    flat = mask.flat.clone()
    grown = torch.zeros_like(flat)
    magnitude = values.detach().abs()
    grad = gradient.detach().abs().to(torch.float64)
    targets = erk_counts(layout, drop_to)
    for i, is_prunable in enumerate(layout.prunable):
        if not is_prunable:
            continue
        part = layout.slice_of(i)
        keep = flat[part]
        kept_index = keep.nonzero().squeeze(1)
        count = max(0, kept_index.numel() - targets[i])
        if count == 0:
            continue
        order = torch.sort(magnitude[part][kept_index], stable=True).indices
        keep[kept_index[order[:count]]] = False
        free = (~keep).nonzero().squeeze(1)
        grow = free[torch.sort(-grad[part][free], stable=True).indices[:count]]
        keep[grow] = True
        grown[part][grow] = True
    return Mask(layout, flat), grown
