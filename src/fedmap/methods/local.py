"""``local``: every client prunes its own model; the server averages what each kept.

The approach FedMap improves on (as in LotteryFL, Li et al. 2020, and Sub-FedAvg,
Vahidian et al. 2021, without their personalisation): after local training each
client prunes its own model by magnitude to the schedule's density (FedMap's:
``(1 - p)^k`` after ``k`` steps, same warm-up and period) and sends its kept
values with its own mask. The server averages each coordinate over the clients
that kept it. Masks differ between clients, so the global model is the union of
their supports: a weight one client pruned comes back when another kept it
(reactivation), the global model is denser than any client's, and every downlink
must carry the union mask (a bootstrap each round). All of it is charged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from fedmap.methods.base import ClientTask, GlobalModel, Method, Step
from fedmap.methods.gradual import steps_to_target
from fedmap.methods.registry import register

if TYPE_CHECKING:
    from fedmap.runs.config import Config


@register
class LocalPruning(Method):
    """``pruning.method = "local"``.

    Parameters
    ----------
    warmup_rounds, rounds_per_step, rate, target_sparsity
        FedMap's fixed schedule; the clients' density after ``k`` steps is ``(1-rate)^k``.
    """

    name = "local"
    label = "client-local"
    colour = "#1f77b4"
    order = 2
    sends_masks = True

    def __init__(
        self, warmup_rounds: int, rounds_per_step: int, rate: float, target_sparsity: float
    ) -> None:
        self.warmup_rounds = warmup_rounds
        self.rounds_per_step = rounds_per_step
        self.rate = rate
        self.max_steps = steps_to_target(rate, target_sparsity)
        self._steps = 0

    @classmethod
    def from_config(cls, config: Config, initial_values: torch.Tensor) -> LocalPruning:
        """FedMap's fixed schedule from ``[pruning]``."""
        p = config.pruning
        return cls(p.warmup_rounds, p.rounds_per_step, p.rate, p.target_sparsity)

    def steps_at(self, round: int) -> int:
        """Schedule steps taken by the start of ``round``."""
        if round <= self.warmup_rounds:
            return 0
        return min(self.max_steps, (round - self.warmup_rounds - 1) // self.rounds_per_step + 1)

    @property
    def iteration(self) -> int:
        """Schedule steps so far."""
        return self._steps

    def plan(self, round: int, model: GlobalModel) -> Step:
        """The server never prunes: masks come from the clients."""
        self._steps = self.steps_at(round)
        return Step()

    def client_task(self, round: int) -> ClientTask | None:
        """After the warm-up, every client prunes its own model to the schedule's density."""
        steps = self.steps_at(round)
        return ClientTask(prune_to=(1.0 - self.rate) ** steps) if steps else None
