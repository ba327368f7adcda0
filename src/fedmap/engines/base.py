"""The engine interface of docs/design.md §4 and the types it trades in.

An engine trains a cohort of clients from one global model under one mask. It
knows nothing of strategies, codecs or the ledger; the round loop
(:mod:`fedmap.rounds`) owns those.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from fedmap.core.mask import Mask, unpack
from fedmap.methods.base import ClientTask
from fedmap.training.train import TrainConfig


@dataclass(frozen=True)
class RoundConfig:
    """What every client of a round needs besides the model: the round, the seed, SGD settings."""

    round: int
    seed: int
    train: TrainConfig
    gradients: bool = False  # also return dense gradient statistics (FedDST, PruneFL rounds)
    initial_pruning: float | None = None  # PruneFL's round 1: train and prune to this density

    @property
    def plain(self) -> bool:
        """Local training only: no gradient statistics, no client-chosen mask.

        Every engine runs plain rounds its own way; the rare others (a method's
        client task) go to the sequential engine's per-client code.
        """
        return not self.gradients and self.initial_pruning is None

    @classmethod
    def for_task(
        cls, round: int, seed: int, train: TrainConfig, task: ClientTask | None
    ) -> RoundConfig:
        """The round's settings with what its client ``task`` asks of the engine."""
        if task is None:
            return cls(round, seed, train)
        return cls(round, seed, train, task.needs_gradients, task.initial_density)


@dataclass(frozen=True)
class ClientResult:
    """A trained client: its packed kept values (CPU float32), sample count and mean loss.

    ``grad_mean`` and ``grad_sq`` (canonical dense CPU vectors) are filled only when
    the round asked for gradients: see :func:`fedmap.training.train.gradient_stats`.
    ``own_mask`` is the mask the client chose while training (PruneFL's initial
    pruning); ``packed`` then still uses the received mask, with 0.0 outside its own.
    """

    client_id: int
    packed: torch.Tensor
    num_samples: int
    train_loss: float
    grad_mean: torch.Tensor | None = None
    grad_sq: torch.Tensor | None = None
    own_mask: Mask | None = None


class Engine(Protocol):
    """Anything that can train a cohort (sequential now, vectorised later)."""

    def train_cohort(
        self,
        global_packed: torch.Tensor,
        mask: Mask,
        clients: Sequence[int],
        round_cfg: RoundConfig,
    ) -> list[ClientResult]:
        """Train ``clients`` from the global model; results in the order of ``clients``."""
        ...


def start_values(
    global_packed: torch.Tensor, mask: Mask, device: torch.device
) -> dict[str, torch.Tensor]:
    """The global model every client starts from: named dense tensors on ``device``."""
    dense = mask.layout.unflatten(unpack(global_packed, mask))  # pruned coordinates exactly 0.0
    return {name: tensor.to(device) for name, tensor in dense.items()}


def client_seed(seed: int, round: int, client_id: int) -> int:
    """A 63-bit seed for one client's round, independent of every other client and round."""
    state = np.random.SeedSequence([seed, round, client_id]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])
