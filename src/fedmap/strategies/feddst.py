"""FedDST (Bibikar et al., "Federated Dynamic Sparse Training", AAAI 2022).

As its reference code (github.com/bibikar/feddst, ``dst.py`` and ``models.py``)
runs it, not a paraphrase of it:

- *Initial mask* (the server, once, round 1): each prunable tensor keeps its
  largest initial weights by magnitude, at the count FedDST's ``erk`` layer
  distribution gives it (:func:`~fedmap.core.prune.erk_counts`), and everyone receives it as a
  bootstrap. There is no dense warm-up.
- *Readjustment* (clients): in rounds ``2, 2 + ΔR, 2 + 2ΔR, ...`` (the reference's
  0-based rounds ``1, 1 + ΔR, ...``; ``ΔR = rounds_per_step``) while
  ``α_t = α/2 (1 + cos(π t / T_end)) > 0``, ``t`` the 0-based round and ``T_end``
  half the run's rounds, each client, after its local training, drops each tensor's
  smallest weights down to its ERK count at density ``d (1 - α_t)`` and regrows it
  to its count where its dense gradient is largest (RigL's step,
  :func:`fedmap.client.rules.drop_and_regrow`); regrown weights start at 0.0. It
  sends its values with its new mask.
- *Aggregation* (server): each weight is averaged over the clients that kept it,
  weighted by sample count, and the union of the clients' masks is pruned back by
  magnitude to each tensor's count (:meth:`FedDSTStrategy.merge`). Between
  readjustments the rounds are FedAvg on a fixed mask and carry values only.

Deviations, each small and documented in docs/methods.md: clients readjust at
the end of local training (the reference's defaults; its epoch gate would skip
most participations at one local epoch); the regrowth gradient is the mean over
the client's local data (the reference takes its last batch); regrowth chooses
among weights not kept (the reference's top-k over every position also zeroes
kept weights it happens to pick, leaving the layer short); ``α_t`` is decayed as
the paper writes it (the reference computes it but prunes with the undecayed
``α``); ties among the zeros the union re-prune must choose from go to the most
votes (the reference leaves them to top-k's order).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from fedmap.client.rules import ClientTask
from fedmap.core.layout import Layout
from fedmap.core.mask import Mask
from fedmap.core.prune import erk_counts, keep_top
from fedmap.strategies.base import GlobalModel, Step, Strategy


def initial_mask(values: torch.Tensor, mask: Mask, density: float) -> Mask:
    """Each prunable tensor's largest ``|values|`` at its :func:`erk_counts` (ties: lower index)."""
    layout = mask.layout
    magnitude = values.detach().abs()
    for i, count in enumerate(erk_counts(layout, density)):
        if layout.prunable[i]:
            candidates = torch.zeros(layout.numel, dtype=torch.bool)
            candidates[layout.slice_of(i)] = True
            mask = keep_top(magnitude, candidates, count, mask)
    return mask


def _top(primary: torch.Tensor, secondary: torch.Tensor, count: int) -> torch.Tensor:
    """Bools: the ``count`` largest by ``primary``, then ``secondary``, then lower index."""
    by_secondary = torch.sort(-secondary.double(), stable=True).indices
    order = by_secondary[torch.sort(-primary.double()[by_secondary], stable=True).indices]
    keep = torch.zeros(primary.numel(), dtype=torch.bool)
    keep[order[:count]] = True
    return keep


class FedDSTStrategy(Strategy):
    """``pruning.method = "feddst"``.

    Parameters
    ----------
    target_sparsity
        The fixed sparsity of every mask.
    rate
        ``α``: share of kept weights dropped and regrown at a readjustment (before decay).
    rounds_per_step
        ``ΔR``: rounds between readjustments.
    rounds
        The run's length; ``α_t`` decays to 0 at half of it (the reference's
        ``rate_decay_end`` default).
    """

    name = "feddst"

    def __init__(
        self, target_sparsity: float, rate: float, rounds_per_step: int, rounds: int
    ) -> None:
        self.target_sparsity = target_sparsity
        self.rate = rate
        self.rounds_per_step = rounds_per_step
        self.decay_end = max(rounds // 2, 1)
        self._readjustments = 0

    @property
    def iteration(self) -> int:
        """Mask readjustments so far."""
        return self._readjustments

    def alpha(self, round: int) -> float:
        """FedDST's cosine-decayed drop-and-regrow share in ``round`` (1-based); 0 from T_end."""
        t = round - 1
        if t >= self.decay_end:
            return 0.0
        return self.rate / 2 * (1 + math.cos(math.pi * t / self.decay_end))

    def is_readjustment(self, round: int) -> bool:
        """Whether clients drop and regrow at the end of ``round``."""
        return (round - 2) % self.rounds_per_step == 0 and self.alpha(round) > 0

    def plan(self, round: int, model: GlobalModel) -> Step:
        """Round 1: the initial mask (a bootstrap to everyone); later: nothing."""
        if round == 1 and model.mask.num_kept_prunable == model.mask.layout.num_prunable:
            mask = initial_mask(model.values, model.mask, 1.0 - self.target_sparsity)
            return Step(mask=mask, reset_values=model.values.masked_fill(~mask.flat, 0.0))
        return Step()

    def client_task(self, round: int) -> ClientTask | None:
        """On readjustment rounds, clients drop to the ERK counts at ``d (1 - α_t)`` and regrow.

        The reference prunes each layer to its count at sparsity ``s + (1 - s) α``
        and grows it back to its count at ``s``, both by :func:`erk_counts`.
        """
        if not self.is_readjustment(round):
            return None
        return ClientTask(drop_to=(1.0 - self.target_sparsity) * (1.0 - self.alpha(round)))

    def merge(
        self, round: int, model: GlobalModel, values: torch.Tensor, votes: torch.Tensor
    ) -> Mask:
        """The union of the clients' masks, pruned back by ``|w|`` to each tensor's count.

        ``values`` is already each weight's mean over the clients that kept it, so a
        weight survives the re-prune by its averaged magnitude, as in the reference.
        Regrown weights arrive as 0.0: they fill a tensor only where its nonzero
        weights fall short of the count (weights every client of the cohort
        dropped), the most-voted first, so the mask changes where the whole cohort
        agrees.
        """
        layout = model.mask.layout
        flat = model.mask.flat.clone()
        for i, is_prunable in enumerate(layout.prunable):
            if not is_prunable:
                continue
            part = layout.slice_of(i)
            count = int(flat[part].sum())
            union = votes[part] > 0
            outside = torch.where(flat[part], -1.0, -2.0)  # a short union keeps the old mask
            magnitude = torch.where(union, values[part].abs().double(), outside.double())
            flat[part] = _top(magnitude, votes[part], count)
        self._readjustments += 1
        return Mask(layout, flat)

    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """The readjustment count (the ``iteration`` column)."""
        return {}, {"readjustments": self._readjustments}

    def load_state_dict(
        self, tensors: dict[str, torch.Tensor], meta: dict[str, Any], layout: Layout
    ) -> None:
        """Restore the readjustment count."""
        self._readjustments = int(meta["readjustments"])
