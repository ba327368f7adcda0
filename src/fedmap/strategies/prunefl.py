"""PruneFL: initial pruning on one client, then adaptive pruning with regrowth.

Jiang et al., "Model Pruning Enables Efficient Federated Learning on Edge Devices",
IEEE TNNLS 2022, as its reference code (github.com/jiangyuang/PruneFL) runs it. Two
stages. *Initial pruning*: round 1's cohort is one client, which trains the dense
model with plain SGD on ten batches of its data and reconfigures it every 50 passes
until the size settles (:mod:`fedmap.client.initial_pruning`); it sends values and
mask (both charged), and the server adopts them and bootstraps everyone.
*Adaptive pruning*: every ``rounds_per_step`` rounds (the reconfiguration interval)
clients also send, for every prunable weight, the squared gradients on their data,
PruneFL's importance, a dense message charged in full. The server averages them and
reconfigures with :func:`~fedmap.core.prune.prunefl_adjust`: up to 30 % of each
tensor's kept weights (halving every 10,000 rounds, as the reference's
``ADJ_HALF_LIFE``) leave by magnitude, and the freed places go to the weights of
largest importance, pruned ones included, which regrow. PruneFL sizes the set by
trading importance against per-weight compute time on the device; here the size is
held at the target density so that every method meets at one sparsity
(docs/methods.md).
"""

from __future__ import annotations

from typing import Any

import torch

from fedmap.client.initial_pruning import MAX_DECREASE
from fedmap.client.rules import ClientTask
from fedmap.core.layout import Layout
from fedmap.core.prune import prunefl_adjust
from fedmap.strategies.base import GlobalModel, Step, Strategy

HALF_LIFE_ROUNDS = 10_000  # ADJ_HALF_LIFE of the reference's configs


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
