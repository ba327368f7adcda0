"""PruneFL: initial pruning on one client, then adaptive pruning with regrowth.

Jiang et al., "Model Pruning Enables Efficient Federated Learning on Edge Devices",
IEEE TNNLS 2022. Two stages. *Initial pruning*: one client trains the dense model on
its own data and prunes it by magnitude, so federated training starts small; here
the round-1 cohort is that one client, which prunes its trained model to the target
density and sends values and mask (both charged); the server adopts them and
bootstraps everyone. *Adaptive pruning*: every ``rounds_per_step`` rounds (the
reconfiguration interval) clients also send, for every prunable weight, the sum of
squared gradients on their data, PruneFL's importance, a dense message that is
charged in full. The server averages them and keeps the weights with the largest
importance, so pruned weights can regrow (from 0.0) and kept ones can go. PruneFL
sizes the set by trading importance against per-parameter compute time on the
device; we hold the size at the target density instead, so that every method is
compared at the same sparsity (docs/methods.md). The reference code's
initial pruning iterates plain-SGD training and importance-based pruning on the chosen
client until the size settles; here it is one local epoch and one magnitude step, and a
label-skewed client can diverge in it (measured in docs/methods.md).
"""

from __future__ import annotations

from typing import Any

import torch

from fedmap.client.rules import ClientTask
from fedmap.core.layout import Layout
from fedmap.core.prune import keep_top
from fedmap.strategies.base import GlobalModel, Step, Strategy


class PruneFLStrategy(Strategy):
    """``pruning.method = "prunefl"``.

    Parameters
    ----------
    target_sparsity
        Sparsity of the initial mask and of every reconfigured one.
    rounds_per_step
        Rounds between reconfigurations.
    """

    name = "prunefl"

    def __init__(self, target_sparsity: float, rounds_per_step: int) -> None:
        self.target_sparsity = target_sparsity
        self.rounds_per_step = rounds_per_step
        self._importance: torch.Tensor | None = None
        self._reconfigurations = 0

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
            return ClientTask(prune_to=1.0 - self.target_sparsity)
        if round % self.rounds_per_step == 0:
            return ClientTask(importance=True)
        return None

    def observe_statistics(self, round: int, importance: torch.Tensor) -> None:
        """Keep the clients' mean importance for the next round's reconfiguration."""
        self._importance = importance.clone()

    def plan(self, round: int, model: GlobalModel) -> Step:
        """Reconfigure from the last importance: the top weights at the mask's size."""
        if self._importance is None:
            return Step()
        importance, self._importance = self._importance, None
        layout = model.mask.layout
        scores = torch.zeros(layout.numel, dtype=torch.float64)
        scores[layout.prunable_flat] = importance.double()
        mask = keep_top(scores, layout.prunable_flat, model.mask.num_kept_prunable, model.mask)
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
