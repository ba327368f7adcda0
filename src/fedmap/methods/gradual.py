"""``gradual``: gradual magnitude pruning with a cubic schedule (Zhu & Gupta, 2017; FedSparsify).

Zhu & Gupta, "To prune, or not to prune: exploring the efficacy of pruning for
model compression" (ICLR workshop 2018), prune to the sparsity
``s_k = s_f * (1 - (1 - k/n)^3)`` at step ``k`` of ``n``: large steps early, while
the model still has redundancy, small ones near the target. FedSparsify-Global
(Stripelis et al., 2022) runs this on the server's aggregated model. Here it takes
FedMap's place in the same loop: the same warm-up, the same period between steps,
as many steps as FedMap needs to reach the target, the same ranking, and the same
wire (each step is a prune instruction the clients reproduce, no mask sent). Only
the share removed per step differs, which isolates the schedule.
"""

from __future__ import annotations

import math

from fedmap.methods.fedmap import FedMap
from fedmap.methods.registry import register


def steps_to_target(rate: float, target_sparsity: float) -> int:
    """FedMap's number of steps at ``rate`` to reach ``target_sparsity``."""
    if target_sparsity <= 0:
        return 0
    return max(1, math.ceil(math.log(1.0 - target_sparsity) / math.log(1.0 - rate) - 1e-9))


def cubic_sparsity(step: int, steps: int, target_sparsity: float) -> float:
    """Zhu & Gupta's sparsity after ``step`` of ``steps`` (initial sparsity 0)."""
    step = min(max(step, 0), steps)
    return target_sparsity * (1.0 - (1.0 - step / steps) ** 3)


@register
class Gradual(FedMap):
    """FedMap's loop with the cubic schedule's share per step (``pruning.method = "gradual"``)."""

    name = "gradual"
    label = "gradual (cubic)"
    colour = "#9467bd"
    order = 4

    @property
    def steps(self) -> int:
        """Steps to the target (FedMap's count at the configured rate)."""
        return steps_to_target(self.rate, self.schedule.target_sparsity)

    def step_rate(self, step: int, sparsity: float) -> float | None:
        """The share of remaining weights that brings the sparsity to ``s_step``."""
        if step > self.steps:
            return None
        wanted = cubic_sparsity(step, self.steps, self.schedule.target_sparsity)
        rate = 1.0 - (1.0 - wanted) / (1.0 - sparsity)
        return rate if rate > 0 else None
