"""Masked local training of one client.

Pruned weights must stay exactly 0.0 through local SGD. Multiplying the gradient
by the mask is enough: with the weight at 0.0, weight decay adds 0.0, the fresh
momentum buffer accumulates only zeros there, and the update is 0.0. Nothing
re-zeroes weights afterwards, so a test of that invariant can actually fail.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class TrainConfig:
    """Local SGD settings (the ``[client]`` config section, less ``fraction``)."""

    epochs: int = 1
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.0
    weight_decay: float = 0.0


def load_values(model: nn.Module, values: Mapping[str, torch.Tensor]) -> None:
    """Copy transmitted tensors into ``model`` (integer buffers are left as they are)."""
    with torch.no_grad():
        state = model.state_dict()
        for name, tensor in values.items():
            state[name].copy_(tensor)


def train_local(
    model: nn.Module,
    masks: Mapping[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    config: TrainConfig,
    generator: torch.Generator,
) -> float:
    """Train ``model`` in place on ``(x, y)`` with masked SGD; return the mean batch loss.

    Parameters
    ----------
    model
        Already holding the global values (see :func:`load_values`).
    masks
        Parameter name -> 0/1 float tensor on the model's device, for prunable parameters.
    x, y
        The client's training data, on the model's device.
    config
        Local epochs, batch size and SGD hyper-parameters.
    generator
        CPU generator that orders the batches (per client and round, for reproducibility).
    """
    params = dict(model.named_parameters())
    optimizer = torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    model.train()
    total, batches = torch.zeros((), device=x.device), 0
    for _ in range(config.epochs):
        order = torch.randperm(len(x), generator=generator).to(x.device)
        for start in range(0, len(x), config.batch_size):
            batch = order[start : start + config.batch_size]
            total += masked_step(model, params, masks, optimizer, x[batch], y[batch])
            batches += 1
    return float(total) / max(batches, 1)


def masked_step(
    model: nn.Module,
    params: Mapping[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    squares: Mapping[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """One SGD step on a batch with the pruned weights' gradients zeroed; the loss, detached.

    ``squares`` (name -> tensor), when given, accumulates the squared *dense*
    gradients, taken before the mask zeroes them: PruneFL's importance, which must
    see the weights it might regrow.
    """
    loss = F.cross_entropy(model(x), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if squares is not None:
        for name, total in squares.items():
            grad = params[name].grad
            if grad is not None:
                total.add_(grad.square())
    for name, keep in masks.items():
        grad = params[name].grad
        if grad is not None:
            grad.mul_(keep)
    optimizer.step()
    return loss.detach()  # no host sync per step


def gradient_stats(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Dense gradients of the loss at ``model``'s current values, pruned weights included.

    One pass over the client's data in order, without updating anything: returns
    the mean gradient (FedDST regrows the weights where its magnitude is largest)
    and the mean over batches of squared gradients (PruneFL's importance; a mean, so
    that the server's sample-weighted average does not count data twice). The model
    is scored in ``eval()`` mode so normalisation statistics are left as they are.
    """
    params = dict(model.named_parameters())
    mean = {n: torch.zeros_like(p) for n, p in params.items()}
    squares = {n: torch.zeros_like(p) for n, p in params.items()}
    was_training = model.training
    model.eval()
    batches = 0
    for start in range(0, len(x), batch_size):
        model.zero_grad(set_to_none=True)
        F.cross_entropy(
            model(x[start : start + batch_size]), y[start : start + batch_size]
        ).backward()
        for name, param in params.items():
            if param.grad is not None:
                mean[name].add_(param.grad)
                squares[name].add_(param.grad.square())
        batches += 1
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    count = max(batches, 1)
    return {n: g / count for n, g in mean.items()}, {n: g / count for n, g in squares.items()}
