"""``none``: dense FedAvg (McMahan et al., AISTATS 2017), the reference every method is judged by.

The same engine, codec, ledger and protocol as every other method; the mask never
changes, so every message carries every value.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from fedmap.methods.base import GlobalModel, Method, Step
from fedmap.methods.registry import register

if TYPE_CHECKING:
    from fedmap.runs.config import Config


@register
class DenseFedAvg(Method):
    """``pruning.method = "none"``."""

    name = "none"
    label = "dense FedAvg"
    colour = "#000000"
    order = 1
    prunes = False

    @classmethod
    def from_config(cls, config: Config, initial_values: torch.Tensor) -> DenseFedAvg:
        """Nothing to set up."""
        return cls()

    def plan(self, round: int, model: GlobalModel) -> Step:
        """Never change the mask."""
        return Step()
