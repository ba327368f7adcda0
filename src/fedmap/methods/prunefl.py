"""``prunefl``: PruneFL, initial pruning on one client, then adaptive pruning with regrowth.

Jiang et al., "Model Pruning Enables Efficient Federated Learning on Edge Devices",
IEEE TNNLS 2022, as its reference code (github.com/jiangyuang/PruneFL) runs it. Two
stages. *Initial pruning*: round 1's cohort is one client, which trains the dense
model with plain SGD on ten batches of its data and reconfigures it every 50 passes
until the size settles (:func:`initial_pruning`); it sends values and mask (both
charged), and the server adopts them and bootstraps everyone.
*Adaptive pruning*: every ``rounds_per_step`` rounds (the reconfiguration interval)
clients also send, for every prunable weight, the squared gradients on their data,
PruneFL's importance, a dense message charged in full. The server averages them and
reconfigures with :func:`prunefl_adjust`: up to 30 % of each tensor's kept weights
(halving every 10,000 rounds, as the reference's ``ADJ_HALF_LIFE``) leave by
magnitude, and the freed places go to the weights of largest importance, pruned
ones included, which regrow. PruneFL sizes the set by trading importance against
per-weight compute time on the device; here the size is held at the target
density so that every method meets at one sparsity (docs/methods.md).

*Initial pruning* in detail. This follows the reference code
(github.com/jiangyuang/PruneFL, ``AdaptiveServer.initial_pruning`` with the
constants of its ``configs/``), not a paraphrase of it:

- ten batches of the client's data are drawn once and reused in the same order on
  every pass; training is plain SGD (no momentum) at the run's learning rate;
- the squared dense gradients of every step accumulate (PruneFL's importance);
- once the accuracy on those batches reaches 1.5x chance (checked every 10 passes),
  the model is reconfigured every 50 passes by :func:`prunefl_adjust`
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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from fedmap.core.layout import Layout
from fedmap.core.mask import Mask, pruned_multipliers
from fedmap.core.prune import clear_smallest, keep_top, kept_for_density, prune_to_density
from fedmap.methods.base import ClientTask, GlobalModel, Method, Step
from fedmap.methods.registry import register
from fedmap.training.evaluate import score
from fedmap.training.train import TrainConfig, masked_step

if TYPE_CHECKING:
    from fedmap.runs.config import Config

HALF_LIFE_ROUNDS = 10_000  # ADJ_HALF_LIFE of the reference's configs
BATCHES = 10  # IP_DATA_BATCH
MAX_PASSES = 1000  # IP_MAX_ROUNDS
ADJUST_EVERY = 50  # IP_ADJ_INTERVAL (passes)
CHECK_EVERY = 10  # EVAL_DISP_INTERVAL (passes)
START_ACCURACY = 1.5  # ADJ_THR_FACTOR: times chance accuracy
MAX_DECREASE = 0.3  # MAX_DEC_DIFF
SETTLED_WITHIN = 0.1  # IP_THR
SETTLED_AFTER = 5  # reconfigurations in a row within SETTLED_WITHIN


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
            leaving = int(max_decrease * kept)
            clear_smallest(magnitude[part], survivors[part].clone(), survivors[part], leaving)
    base = Mask(layout, survivors)
    refill = min_kept - base.num_kept_prunable
    candidates = layout.prunable_flat & ~survivors
    return keep_top(importance.detach().to("cpu"), candidates, max(refill, 0), base)


@register
class PruneFL(Method):
    """``pruning.method = "prunefl"``.

    Parameters
    ----------
    target_sparsity
        Sparsity of the initial mask and of every reconfigured one.
    rounds_per_step
        Rounds between reconfigurations.
    """

    name = "prunefl"
    label = "PruneFL"
    colour = "#ff7f0e"
    order = 6
    revision = 2  # 2026-11-28: the reference code's iterative initial pruning and reconfiguration
    sends_masks = True

    def __init__(self, target_sparsity: float, rounds_per_step: int) -> None:
        self.target_sparsity = target_sparsity
        self.rounds_per_step = rounds_per_step
        self._importance: torch.Tensor | None = None
        self._reconfigurations = 0

    @classmethod
    def from_config(cls, config: Config, initial_values: torch.Tensor) -> PruneFL:
        """The target and the reconfiguration interval from ``[pruning]``."""
        return cls(config.pruning.target_sparsity, config.pruning.rounds_per_step)

    @property
    def iteration(self) -> int:
        """Reconfigurations so far."""
        return self._reconfigurations

    def cohort_size(self, round: int) -> int | None:
        """Round 1 is the one-client initial pruning."""
        return 1 if round == 1 else None

    def client_task(self, round: int) -> ClientTask | None:
        """Round 1: prune to the target; reconfiguration rounds: send importance."""
        if round == 1:
            return ClientTask(prune_to=1.0 - self.target_sparsity, initial_pruning=True)
        if round % self.rounds_per_step == 0:
            return ClientTask(importance=True)
        return None

    def observe_statistics(self, round: int, importance: torch.Tensor) -> None:
        """Keep the clients' mean importance for the next round's reconfiguration."""
        self._importance = importance.clone()

    def plan(self, round: int, model: GlobalModel) -> Step:
        """Reconfigure from the last importance at the mask's size (see module docstring)."""
        if self._importance is None:
            return Step()
        importance, self._importance = self._importance, None
        layout = model.mask.layout
        scores = torch.zeros(layout.numel, dtype=torch.float64)
        scores[layout.prunable_flat] = importance.double()
        decrease = MAX_DECREASE * 0.5 ** (round / HALF_LIFE_ROUNDS)
        mask = prunefl_adjust(
            model.values, scores, model.mask, model.mask.num_kept_prunable, decrease
        )
        if mask.same_as(model.mask):
            return Step()
        self._reconfigurations += 1
        return Step(mask=mask, reset_values=model.values.masked_fill(~mask.flat, 0.0))

    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Pending importance and the reconfiguration count."""
        tensors = {} if self._importance is None else {"importance": self._importance}
        return tensors, {"reconfigurations": self._reconfigurations}

    def load_state_dict(
        self, tensors: dict[str, torch.Tensor], meta: dict[str, Any], layout: Layout
    ) -> None:
        """Restore what :meth:`state_dict` returned."""
        self._importance = tensors.get("importance")
        self._reconfigurations = int(meta["reconfigurations"])


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
    device, size = x.device, config.batch_size
    kept = kept_for_density(layout.num_prunable, density)
    order = torch.randperm(len(x), generator=generator).to(device)
    batches = [order[s : s + size] for s in range(0, min(len(x), BATCHES * size), size)]
    chosen = torch.cat(batches)  # scored in the same batches as trained
    with torch.no_grad():
        classes = model.eval()(x[chosen[:1]]).shape[1]  # chance is 1 / the logits' width
    params = dict(model.named_parameters())
    names = zip(layout.names, layout.prunable, strict=True)
    squares = {n: torch.zeros_like(params[n]) for n, prunable in names if prunable}
    optimizer = torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=0.0, weight_decay=config.weight_decay
    )
    masks = pruned_multipliers(mask, device)
    sizes = _Sizes()
    total, steps, passes = torch.zeros((), device=device), 0, 0
    for passes in range(1, MAX_PASSES + 1):
        if sizes.started is None and (passes - 1) % CHECK_EVERY == 0:
            if score(model, x[chosen], y[chosen], size).accuracy >= START_ACCURACY / classes:
                sizes.started = passes
        model.train()
        for batch in batches:
            total += masked_step(model, params, masks, optimizer, x[batch], y[batch], squares)
            steps += 1
        if sizes.started is None or (passes - sizes.started) % ADJUST_EVERY:
            continue
        mask, masks = _reconfigure(model, layout, params, squares, mask, kept, device)
        if sizes.settled(mask.num_kept_prunable):
            break
    if mask.num_kept_prunable > kept:  # the passes ran out first
        mask = prune_to_density(layout.flatten(model.state_dict()), mask, density)
        _zero_pruned(params, mask, device)
    return InitialPruningResult(mask, float(total) / max(steps, 1), passes, sizes.count)


@dataclass
class _Sizes:
    """The initial pruning's progress: when reconfiguring began, and the sizes since."""

    started: int | None = None  # the pass at which the accuracy first reached the threshold
    sizes: list[int] = field(default_factory=list)  # kept weights after each reconfiguration

    @property
    def count(self) -> int:
        """Reconfigurations so far."""
        return len(self.sizes)

    def settled(self, size: int) -> bool:
        """Record a reconfiguration's size; whether the last few changed it by little."""
        self.sizes.append(size)
        pairs = zip(self.sizes, self.sizes[1:], strict=False)
        changes = [abs(b / a - 1.0) <= SETTLED_WITHIN for a, b in pairs]
        return len(changes) >= SETTLED_AFTER and all(changes[-SETTLED_AFTER:])


def _reconfigure(
    model: nn.Module,
    layout: Layout,
    params: Mapping[str, torch.Tensor],
    squares: Mapping[str, torch.Tensor],
    mask: Mask,
    kept: int,
    device: torch.device,
) -> tuple[Mask, dict[str, torch.Tensor]]:
    """One reconfiguration from the accumulated importance, which then starts afresh."""
    state = model.state_dict()
    values = layout.flatten(state)
    importance = layout.flatten({**state, **squares})
    mask = prunefl_adjust(values, importance, mask, kept, MAX_DECREASE)
    masks = _zero_pruned(params, mask, device)
    for square in squares.values():
        square.zero_()
    return mask, masks


def _zero_pruned(
    params: Mapping[str, torch.Tensor], mask: Mask, device: torch.device
) -> dict[str, torch.Tensor]:
    """Set ``mask``'s pruned weights to 0.0 in the model; return its gradient multipliers."""
    masks = pruned_multipliers(mask, device)
    with torch.no_grad():
        for name, keep in masks.items():
            params[name].mul_(keep)
    return masks
