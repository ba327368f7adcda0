"""``oneshot``: one-shot global magnitude pruning on FedMap's loop.

Right after the warm-up the server removes ``target_sparsity`` of the prunable
weights in one step, then trains on that mask. Everything else (warm-up, wire,
guard) is FedMap's; the step is an instruction the clients carry out themselves.
"""

from __future__ import annotations

from fedmap.methods.fedmap import FedMap
from fedmap.methods.registry import register


@register
class OneShot(FedMap):
    """``pruning.method = "oneshot"``: one step, straight to the target."""

    name = "oneshot"
    label = "one-shot"
    colour = "#2ca02c"
    order = 3

    def step_rate(self, step: int, sparsity: float) -> float | None:
        """The first step removes the target share of the (dense) model; no second step."""
        return self.schedule.target_sparsity if step == 1 else None
