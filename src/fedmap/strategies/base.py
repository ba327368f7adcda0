"""The one small interface every method implements.

A strategy decides, at the start of each round, whether the mask changes and how;
it is told the validation accuracy at the end of each round. Everything else
(sending, validating, aggregating) is the :class:`~fedmap.strategies.server.Server`'s
job and is shared by all methods, in the simulator and over Flower alike.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import torch

from fedmap.client.rules import ClientTask
from fedmap.core.codec import PruneInstruction
from fedmap.core.layout import Layout
from fedmap.core.mask import Mask


@dataclass(frozen=True)
class GlobalModel:
    """The server's model: canonical values (exact 0.0 where pruned), mask and mask epoch."""

    values: torch.Tensor
    mask: Mask
    epoch: int


@dataclass(frozen=True)
class Step:
    """A strategy's decision for one round.

    ``prune`` with ``mask``: a step every in-step client can reproduce from the values.
    ``reset`` with ``mask`` and ``values``: a new model no client can derive (guard revert,
    rewind); every client then receives a bootstrap.
    """

    prune: PruneInstruction | None = None
    mask: Mask | None = None
    reset_values: torch.Tensor | None = None


class Strategy(ABC):
    """Decides how the mask evolves; see module docstring."""

    name: str = "strategy"

    @abstractmethod
    def plan(self, round: int, model: GlobalModel) -> Step:
        """Return what changes at the start of ``round`` (``Step()`` for nothing)."""

    def observe(self, round: int, model: GlobalModel, val_accuracy: float) -> None:  # noqa: B027
        """Take the validation accuracy of ``model`` at the end of ``round`` (default: ignore)."""

    def client_task(self, round: int) -> ClientTask | None:
        """Extra work the clients of ``round`` do before replying (default: none, FedMap's way)."""
        return None

    def cohort_size(self, round: int) -> int | None:
        """Clients to sample in ``round`` instead of ``fraction`` of them (default: no change)."""
        return None

    def merge(
        self, round: int, model: GlobalModel, values: torch.Tensor, votes: torch.Tensor
    ) -> Mask:
        """The mask after a round whose replies carried their own masks.

        ``values`` is the per-coordinate mean over the clients that kept each
        coordinate and ``votes`` their summed weights. Default: the union of the
        clients' masks (client-local pruning), so a weight one client pruned comes
        back if another kept it.
        """
        layout = model.mask.layout
        return Mask(layout, ~layout.prunable_flat | (votes > 0))

    def observe_statistics(self, round: int, importance: torch.Tensor) -> None:  # noqa: B027
        """Take the clients' sample-weighted mean statistics of ``round`` (default: ignore)."""

    @property
    def iteration(self) -> int:
        """Prune steps in the current mask (the ``iteration`` metrics column)."""
        return 0

    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """What the strategy remembers between rounds (for checkpoints); default: nothing."""
        return {}, {}

    def load_state_dict(  # noqa: B027
        self, tensors: dict[str, torch.Tensor], meta: dict[str, Any], layout: Layout
    ) -> None:
        """Restore what :meth:`state_dict` returned; default: nothing to restore."""


class DenseStrategy(Strategy):
    """``pruning.method = "none"``: dense FedAvg on the same engine, ledger and codec."""

    name = "none"

    def plan(self, round: int, model: GlobalModel) -> Step:
        """Never change the mask."""
        return Step()
