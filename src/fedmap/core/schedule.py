"""When FedMap prunes: the schedule of docs/design.md §1 as a pure state machine.

Rounds are numbered from 1. The first ``warmup_rounds`` rounds are dense; after
that a prune step is due every ``rounds_per_step`` rounds (trigger ``"fixed"``) or
once the validation accuracy has not improved for ``patience`` rounds (trigger
``"plateau"``), until the sparsity reaches the target. The optional accuracy guard
compares each mask's best validation accuracy with the best dense one: when a
step costs more than ``guard_delta``, pruning stops and the run returns to the last
mask within ``guard_delta`` (the caller keeps that snapshot; the schedule only says so).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

TRIGGERS: tuple[str, ...] = ("fixed", "plateau")


@dataclass(frozen=True)
class Schedule:
    """The schedule's settings (``rate`` is applied by the caller at each step)."""

    warmup_rounds: int
    rounds_per_step: int
    target_sparsity: float
    trigger: str = "fixed"
    patience: int = 3
    guard_delta: float = math.inf  # accuracy fraction; inf disables the guard

    def __post_init__(self) -> None:
        if self.trigger not in TRIGGERS:
            raise ValueError(f"pruning.trigger: expected one of {TRIGGERS}, got {self.trigger!r}")


@dataclass(frozen=True)
class ScheduleState:
    """What the schedule remembers between rounds."""

    last_step_round: int = 0  # round at whose start the latest step happened (0: none)
    version_best: float = -math.inf  # best validation accuracy under the current mask
    rounds_since_best: int = 0
    dense_best: float = -math.inf
    steps: int = 0  # prune steps in the current mask
    stopped: bool = False  # the guard ended pruning


@dataclass(frozen=True)
class Decision:
    """What to do at the start of a round: nothing, prune once, or revert (guard)."""

    prune: bool = False
    revert: bool = False


def decide(schedule: Schedule, state: ScheduleState, round: int, sparsity: float) -> Decision:
    """Decide, at the start of ``round``, whether a prune step (or a guard revert) is due.

    The guard is consulted whenever a step would be due, including after the target
    is reached, so the last mask is judged like every other one.
    """
    if state.stopped or round <= schedule.warmup_rounds or round <= state.last_step_round:
        return Decision()
    if schedule.trigger == "fixed":
        anchor = state.last_step_round or schedule.warmup_rounds + 1 - schedule.rounds_per_step
        due = round - anchor >= schedule.rounds_per_step
    else:
        due = state.rounds_since_best >= schedule.patience
    if not due:
        return Decision()
    if state.steps > 0 and violates_guard(schedule, state):
        return Decision(revert=True)
    return Decision(prune=sparsity < schedule.target_sparsity - 1e-12)


def violates_guard(schedule: Schedule, state: ScheduleState) -> bool:
    """True when the current mask's best accuracy is more than ``guard_delta`` below dense."""
    return state.version_best < state.dense_best - schedule.guard_delta


def after_prune(state: ScheduleState, round: int) -> ScheduleState:
    """Record a prune step taken at the start of ``round``; the new mask starts unscored."""
    return replace(
        state,
        last_step_round=round,
        version_best=-math.inf,
        rounds_since_best=0,
        steps=state.steps + 1,
    )


def after_revert(state: ScheduleState, steps: int) -> ScheduleState:
    """Record a guard revert to the mask after ``steps`` steps: pruning ends for good."""
    return replace(state, stopped=True, steps=steps)


def observe(state: ScheduleState, accuracy: float) -> ScheduleState:
    """Fold in the validation accuracy measured at the end of a round."""
    improved = accuracy > state.version_best
    return replace(
        state,
        version_best=max(state.version_best, accuracy),
        rounds_since_best=0 if improved else state.rounds_since_best + 1,
        dense_best=max(state.dense_best, accuracy) if state.steps == 0 else state.dense_best,
    )
