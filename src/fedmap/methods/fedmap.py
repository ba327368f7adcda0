"""FedMap (Herzog et al., 2024): iterative global magnitude pruning with nested masks.

Each step removes ``rate`` of the remaining prunable weights that rank lowest (by
magnitude, or at random for the control) in the aggregated global model. The step
is sent as an instruction, not a mask: every in-step client recomputes the same
mask from the same values. One-shot, gradual and random pruning are this loop
with one thing changed (:mod:`~fedmap.methods.oneshot`,
:mod:`~fedmap.methods.gradual`, :mod:`~fedmap.methods.random`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any

import torch

from fedmap.core.codec import PruneInstruction
from fedmap.core.layout import Layout
from fedmap.core.mask import Mask
from fedmap.core.prune import Ranking, Scope, compute_mask
from fedmap.core.schedule import (
    Schedule,
    ScheduleState,
    after_prune,
    after_revert,
    decide,
    observe,
)
from fedmap.methods.base import GlobalModel, Method, Step
from fedmap.methods.registry import register

if TYPE_CHECKING:
    from fedmap.runs.config import Config


def schedule_of(config: Config) -> Schedule:
    """The ``[pruning]`` section's schedule (warm-up, period or plateau, target, guard)."""
    p = config.pruning
    return Schedule(
        p.warmup_rounds, p.rounds_per_step, p.target_sparsity, p.trigger, p.patience, p.guard_delta
    )


@register
class FedMap(Method):
    """FedMap's schedule, ranked steps, optional accuracy guard and rewind.

    Parameters
    ----------
    schedule
        When steps happen (warm-up, trigger, target, guard).
    rate
        Fraction of the remaining prunable weights removed per step.
    scope, ranking
        One ranking across tensors or one per tensor; by magnitude or at random.
    rewind_to
        The model at round 0; given, kept weights are rewound to it after each step.
    """

    name = "fedmap"
    label = "FedMap"
    colour = "#d62728"
    order = 0

    def __init__(
        self,
        schedule: Schedule,
        rate: float,
        scope: Scope = "global",
        ranking: Ranking = "magnitude",
        rewind_to: torch.Tensor | None = None,
    ) -> None:
        self.schedule = schedule
        self.rate = rate
        self.scope: Scope = scope
        self.ranking: Ranking = ranking
        self.rewind_to = rewind_to
        self.state = ScheduleState()
        self._fallback: tuple[torch.Tensor, Mask, int] | None = None  # guard's last good model

    @classmethod
    def from_config(cls, config: Config, initial_values: torch.Tensor) -> FedMap:
        """``[pruning]``'s schedule, rate, scope, ranking and rewind."""
        p = config.pruning
        rewind = initial_values if p.rewind else None
        return cls(schedule_of(config), p.rate, p.scope, p.ranking, rewind)  # type: ignore[arg-type]

    @property
    def iteration(self) -> int:
        """Prune steps in the current mask."""
        return self.state.steps

    def plan(self, round: int, model: GlobalModel) -> Step:
        """Prune, revert (guard) or do nothing at the start of ``round``."""
        decision = decide(self.schedule, self.state, round, model.mask.sparsity)
        if decision.revert and self._fallback is not None:
            values, mask, steps = self._fallback
            self.state = after_revert(self.state, steps)
            return Step(mask=mask, reset_values=values)
        if not decision.prune:
            return Step()
        rate = self.step_rate(self.state.steps + 1, model.mask.sparsity)
        if rate is None:
            return Step()
        mask = compute_mask(model.values, model.mask, rate, self.scope, self.ranking)
        self.state = after_prune(self.state, round)
        if self.rewind_to is not None:
            return Step(mask=mask, reset_values=self.rewind_to.masked_fill(~mask.flat, 0.0))
        return Step(prune=PruneInstruction(rate, self.scope, self.ranking), mask=mask)

    def step_rate(self, step: int, sparsity: float) -> float | None:
        """Share of the remaining weights step number ``step`` removes (``None``: no step).

        FedMap removes the same share every time; one-shot and gradual override this.
        """
        return self.rate

    def observe(self, round: int, model: GlobalModel, val_accuracy: float) -> None:
        """Score the current mask; remember the best model within the guard's tolerance."""
        before = self.state.version_best
        self.state = observe(self.state, val_accuracy)
        guard_on = math.isfinite(self.schedule.guard_delta)
        within = val_accuracy >= self.state.dense_best - self.schedule.guard_delta
        if guard_on and val_accuracy > before and within:
            self._fallback = (model.values.clone(), model.mask, self.state.steps)

    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """The schedule's state and the guard's fallback model."""
        meta: dict[str, Any] = {"schedule": dataclasses.asdict(self.state), "fallback": None}
        tensors: dict[str, torch.Tensor] = {}
        if self._fallback is not None:
            values, mask, steps = self._fallback
            tensors = {"fallback.values": values, "fallback.mask": mask.prunable_bits()}
            meta["fallback"] = steps
        return tensors, meta

    def load_state_dict(
        self, tensors: dict[str, torch.Tensor], meta: dict[str, Any], layout: Layout
    ) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.state = ScheduleState(**meta["schedule"])
        self._fallback = None
        if meta["fallback"] is not None:
            mask = Mask.from_prunable_bits(layout, tensors["fallback.mask"])
            self._fallback = (tensors["fallback.values"].clone(), mask, int(meta["fallback"]))
