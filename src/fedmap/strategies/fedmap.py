"""FedMap (Herzog et al., 2024): iterative global magnitude pruning with nested masks.

Each step removes ``rate`` of the remaining prunable weights with the smallest
magnitude in the aggregated global model. The step is sent as an instruction, not
a mask: every in-step client recomputes the same mask from the same values.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch

from fedmap.core.codec import PruneInstruction
from fedmap.core.layout import Layout
from fedmap.core.mask import Mask
from fedmap.core.prune import compute_mask
from fedmap.core.schedule import (
    Schedule,
    ScheduleState,
    after_prune,
    after_revert,
    decide,
    observe,
)
from fedmap.strategies.base import GlobalModel, Step, Strategy


class FedMapStrategy(Strategy):
    """FedMap's schedule, magnitude steps, optional accuracy guard and rewind.

    Parameters
    ----------
    schedule
        When steps happen (warm-up, trigger, target, guard).
    rate
        Fraction of the remaining prunable weights removed per step.
    scope
        ``"global"`` (one ranking across tensors) or ``"layer"``.
    initial_values
        The model at round 0; given, kept weights are rewound to it after each step.
    name
        The method this instance runs: ``"random"`` (scope ``"random"``) and
        ``"oneshot"`` (rate = target, ``max_steps=1``) are FedMap's loop with one
        setting changed.
    max_steps
        No step after this many (one-shot: a count rounded down must not trigger a
        second step at the full rate).
    """

    name = "fedmap"

    def __init__(
        self,
        schedule: Schedule,
        rate: float,
        scope: str = "global",
        initial_values: torch.Tensor | None = None,
        name: str = "fedmap",
        max_steps: int | None = None,
    ) -> None:
        self.name = name
        self.max_steps = max_steps
        self.schedule = schedule
        self.rate = rate
        self.scope = scope
        self.initial_values = initial_values
        self.state = ScheduleState()
        self._fallback: tuple[torch.Tensor, Mask, int] | None = None  # guard's last good model

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
        mask = compute_mask(model.values, model.mask, rate, self.scope)  # type: ignore[arg-type]
        self.state = after_prune(self.state, round)
        if self.initial_values is not None:
            return Step(mask=mask, reset_values=self.initial_values.masked_fill(~mask.flat, 0.0))
        return Step(prune=PruneInstruction(rate, self.scope), mask=mask)

    def step_rate(self, step: int, sparsity: float) -> float | None:
        """Share of the remaining weights step number ``step`` removes (``None``: no step).

        FedMap removes the same share every time; the gradual baseline overrides this.
        """
        if self.max_steps is not None and step > self.max_steps:
            return None
        return self.rate

    def observe(self, round: int, model: GlobalModel, val_accuracy: float) -> None:
        """Score the current mask; remember the best model within the guard's tolerance."""
        before = self.state.epoch_best
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
