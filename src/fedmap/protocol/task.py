"""What a client does to its trained model before replying, for the methods that need it.

FedMap's clients send their kept values and nothing else. The baselines it is
judged against do more on the client: client-local pruning prunes each client's
own model (so every client sends its own mask), FedDST drops and regrows weights
on the client (a new mask per client), PruneFL asks for the squared gradients of
every weight. The server names the work in a :class:`ClientTask`; this module does
it, the same way in the simulator and in any other front door; the helpers that
belong to one method (FedDST's drop and regrow) live in that method's module.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fedmap.core.mask import Mask, pack
from fedmap.core.prune import prune_to_density
from fedmap.methods.base import ClientTask
from fedmap.methods.feddst import drop_and_regrow


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
