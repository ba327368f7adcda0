"""FedDST (Bibikar et al., "Federated Dynamic Sparse Training", AAAI 2022).

The model is sparse from round 1: a random mask at the target density, the same
share in every prunable tensor, sent to every client. Clients train on it. Every
``rounds_per_step`` rounds (FedDST's ΔR) each client, after its local training,
runs RigL's step on its own model: per tensor, drop the share ``α_t`` of its kept
weights with the smallest ``|w|`` and regrow as many where the dense gradient on
its data is largest; it sends its values with that new mask. ``α_t`` follows
FedDST's cosine decay, ``α/2 (1 + cos(π t / T))``, with ``α = pruning.rate`` and
``T`` the run's rounds. The server aggregates the masks: each weight's vote is the
summed sample counts of the clients that kept it; in each tensor the top votes
(ties: larger aggregated ``|w|``, then lower index) at the tensor's count form the
new global mask, and each kept weight is averaged over the clients that kept it. The new
mask then reaches every client as a bootstrap. Between readjustments the rounds
are FedAvg on a fixed mask and carry values only.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from fedmap.client.rules import ClientTask
from fedmap.core.layout import Layout
from fedmap.core.mask import Mask
from fedmap.core.prune import kept_for_density
from fedmap.strategies.base import GlobalModel, Step, Strategy


def random_layer_mask(mask: Mask, density: float, seed: int) -> Mask:
    """Keep a uniformly random ``density`` share of every prunable tensor (seeded)."""
    layout = mask.layout
    rng = np.random.default_rng([seed, 0xD57])
    flat = mask.flat.clone()
    for i, is_prunable in enumerate(layout.prunable):
        if is_prunable:
            part = layout.slice_of(i)
            size = flat[part].numel()
            keep = kept_for_density(size, density)
            chosen = torch.from_numpy(rng.permutation(size)[:keep])
            bits = torch.zeros(size, dtype=torch.bool)
            bits[chosen] = True
            flat[part] = bits
    return Mask(layout, flat)


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
        ``T`` of the cosine decay (the run's length).
    seed
        Draws the initial random mask.
    """

    name = "feddst"

    def __init__(
        self, target_sparsity: float, rate: float, rounds_per_step: int, rounds: int, seed: int
    ) -> None:
        self.target_sparsity = target_sparsity
        self.rate = rate
        self.rounds_per_step = rounds_per_step
        self.rounds = max(rounds, 1)
        self.seed = seed
        self._readjustments = 0

    @property
    def iteration(self) -> int:
        """Mask readjustments so far."""
        return self._readjustments

    def alpha(self, round: int) -> float:
        """FedDST's cosine-decayed drop-and-regrow share at ``round``."""
        return self.rate / 2 * (1 + math.cos(math.pi * min(round, self.rounds) / self.rounds))

    def is_readjustment(self, round: int) -> bool:
        """Whether clients drop and regrow at the end of ``round``."""
        return round > 1 and round % self.rounds_per_step == 0 and self.alpha(round) > 0

    def plan(self, round: int, model: GlobalModel) -> Step:
        """Round 1: the random initial mask (a bootstrap to everyone); later: nothing."""
        if round == 1 and model.mask.num_kept_prunable == model.mask.layout.num_prunable:
            mask = random_layer_mask(model.mask, 1.0 - self.target_sparsity, self.seed)
            return Step(mask=mask, reset_values=model.values.masked_fill(~mask.flat, 0.0))
        return Step()

    def client_task(self, round: int) -> ClientTask | None:
        """On readjustment rounds, clients drop and regrow after training."""
        return ClientTask(regrow=self.alpha(round)) if self.is_readjustment(round) else None

    def merge(
        self, round: int, model: GlobalModel, values: torch.Tensor, votes: torch.Tensor
    ) -> Mask:
        """Per tensor, the top votes at its current count; ties: larger ``|w|``, lower index.

        Clients readjust at the end of their local training here, so a regrown weight
        arrives as 0.0: re-pruning the averaged model by magnitude (the reference
        code's rule, where clients train on after regrowing) would drop every regrown
        weight. Votes keep what most of the cohort's data asked for, and each tensor
        keeps its count, so the layer densities of the initial mask are preserved.
        """
        layout = model.mask.layout
        flat = model.mask.flat.clone()
        for i, is_prunable in enumerate(layout.prunable):
            if not is_prunable:
                continue
            part = layout.slice_of(i)
            count = int(flat[part].sum())
            by_magnitude = torch.sort(-values[part].abs().double(), stable=True).indices
            by_votes = torch.sort(-votes[part][by_magnitude], stable=True).indices
            keep = torch.zeros(flat[part].numel(), dtype=torch.bool)
            keep[by_magnitude[by_votes[:count]]] = True
            flat[part] = keep
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
