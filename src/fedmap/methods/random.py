"""``random``: random pruning on FedMap's schedule, the control that shows magnitude matters.

Each step removes as many weights as FedMap's, chosen uniformly at random among
all kept prunable weights (one global ranking, whatever ``pruning.scope`` says, as
this method always has). The scores are seeded from the kept values' bytes, which
every in-step party holds exactly, so clients still derive the mask themselves
and the wire is FedMap's byte for byte. Per-tensor random pruning is
``pruning.method = "fedmap"`` with ``ranking = "random"`` and ``scope = "layer"``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from fedmap.methods.fedmap import FedMap, schedule_of
from fedmap.methods.registry import register

if TYPE_CHECKING:
    from fedmap.runs.config import Config


@register
class RandomPruning(FedMap):
    """``pruning.method = "random"``: FedMap ranked at random and globally, whatever the config."""

    name = "random"
    label = "random"
    colour = "#8c564b"
    order = 5

    @classmethod
    def from_config(cls, config: Config, initial_values: torch.Tensor) -> RandomPruning:
        """FedMap's schedule, rate and rewind; one global random ranking."""
        p = config.pruning
        rewind = initial_values if p.rewind else None
        return cls(schedule_of(config), p.rate, "global", "random", rewind)
