"""PruneFL's initial pruning: one client trains and prunes the dense model, iteratively.

Jiang et al. (TNNLS 2022) start federated training small: a selected party trains
the dense model on a little of its own data and reconfigures it until its size
settles, and everyone starts from the result. This follows the reference code
(github.com/jiangyuang/PruneFL, ``AdaptiveServer.initial_pruning`` with the
constants of its ``configs/``), not a paraphrase of it:

- ten batches of the client's data are drawn once and reused in the same order on
  every pass; training is plain SGD (no momentum) at the run's learning rate;
- the squared dense gradients of every step accumulate (PruneFL's importance);
- once the accuracy on those batches reaches 1.5x chance (checked every 10 passes),
  the model is reconfigured every 50 passes by :func:`~fedmap.core.prune.prunefl_adjust`
  (at most 30 % of each tensor's kept weights leave by magnitude, candidates come
  back by importance) and the accumulated importance is reset;
- it stops when five reconfigurations in a row changed the size by at most 10 %,
  or after 1000 passes.

Where PruneFL lets its time model choose the size, the size here falls as fast as
the 30 % bound allows until it reaches the run's target, then stays there, so that
all methods meet at one sparsity (docs/methods.md). Should the passes run out
before that, the last step prunes by magnitude to the target: the server checks
the reply keeps exactly the target count.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from fedmap.client.evaluate import score
from fedmap.client.train import TrainConfig, masked_step
from fedmap.core.layout import Layout
from fedmap.core.mask import Mask, pruned_multipliers
from fedmap.core.prune import kept_for_density, prune_to_density, prunefl_adjust

BATCHES = 10  # IP_DATA_BATCH
MAX_PASSES = 1000  # IP_MAX_ROUNDS
ADJUST_EVERY = 50  # IP_ADJ_INTERVAL (passes)
CHECK_EVERY = 10  # EVAL_DISP_INTERVAL (passes)
START_ACCURACY = 1.5  # ADJ_THR_FACTOR: times chance accuracy
MAX_DECREASE = 0.3  # MAX_DEC_DIFF
SETTLED_WITHIN = 0.1  # IP_THR
SETTLED_AFTER = 5  # reconfigurations in a row within SETTLED_WITHIN


@dataclass(frozen=True)
class InitialPruningResult:
    """The client's mask and training record; the model holds its trained values."""

    mask: Mask
    train_loss: float
    passes: int
    reconfigurations: int


def initial_pruning(
    model: nn.Module,
    layout: Layout,
    mask: Mask,
    x: torch.Tensor,
    y: torch.Tensor,
    density: float,
    config: TrainConfig,
    generator: torch.Generator,
) -> InitialPruningResult:
    """Train ``model`` in place from ``mask`` and prune it to ``density`` (see module docstring).

    Parameters
    ----------
    model
        Holding the global values (pruned coordinates 0.0); its parameters are ``layout``'s.
    mask
        The received mask, which must be dense (PruneFL prunes before federated
        training starts); the result keeps ``round(density * num_prunable)`` weights.
    config
        The run's local SGD settings; only the learning rate, batch size and weight
        decay are used (PruneFL's initial pruning uses plain SGD).
    generator
        Draws the ten batches.
    """
    if mask.num_kept != layout.numel:
        raise ValueError("PruneFL's initial pruning starts from the dense model")
    device = x.device
    kept = kept_for_density(layout.num_prunable, density)
    order = torch.randperm(len(x), generator=generator).to(device)
    size = config.batch_size
    batches = [order[s : s + size] for s in range(0, min(len(x), BATCHES * size), size)]
    chosen = torch.cat(batches)  # scored in the same batches as trained
    with torch.no_grad():
        classes = model.eval()(x[chosen[:1]]).shape[1]  # chance is 1 / the logits' width
    params = dict(model.named_parameters())
    prunable = {n for n, p in zip(layout.names, layout.prunable, strict=True) if p}
    squares = {n: torch.zeros_like(t) for n, t in params.items() if n in prunable}
    optimizer = torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=0.0, weight_decay=config.weight_decay
    )
    masks = pruned_multipliers(mask, device)
    started: int | None = None
    previous: int | None = None
    settled: list[bool] = []
    reconfigurations = 0
    total, steps, passes = torch.zeros((), device=device), 0, 0
    for passes in range(1, MAX_PASSES + 1):
        if started is None and (passes - 1) % CHECK_EVERY == 0:
            accuracy = score(model, x[chosen], y[chosen], size).accuracy
            if accuracy >= START_ACCURACY / classes:
                started = passes
        model.train()
        for batch in batches:
            total += masked_step(model, params, masks, optimizer, x[batch], y[batch], squares)
            steps += 1
        if started is None or (passes - started) % ADJUST_EVERY:
            continue
        state = model.state_dict()
        values = layout.flatten(state)
        importance = layout.flatten({**state, **squares})
        mask = prunefl_adjust(values, importance, mask, kept, MAX_DECREASE)
        masks = _zero_pruned(params, mask, device)
        for square in squares.values():
            square.zero_()
        reconfigurations += 1
        size_now = mask.num_kept_prunable
        if previous is not None:
            settled.append(abs(size_now / previous - 1.0) <= SETTLED_WITHIN)
        previous = size_now
        if len(settled) >= SETTLED_AFTER and all(settled[-SETTLED_AFTER:]):
            break
    if mask.num_kept_prunable > kept:  # the passes ran out first
        mask = prune_to_density(layout.flatten(model.state_dict()), mask, density)
        _zero_pruned(params, mask, device)
    return InitialPruningResult(mask, float(total) / max(steps, 1), passes, reconfigurations)


def _zero_pruned(
    params: Mapping[str, torch.Tensor], mask: Mask, device: torch.device
) -> dict[str, torch.Tensor]:
    """Set ``mask``'s pruned weights to 0.0 in the model; return its gradient multipliers."""
    masks = pruned_multipliers(mask, device)
    with torch.no_grad():
        for name, keep in masks.items():
            params[name].mul_(keep)
    return masks
