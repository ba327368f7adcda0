"""End-of-round evaluation of the global model: test set and every client's local split.

The pooled accuracy over the clients' local test splits is the *validation*
accuracy that drives the plateau trigger and the accuracy guard (it is what a real
federation can measure); the central test set is reported but never steers a run.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fedmap.core.layout import Layout
from fedmap.training.evaluate import accuracy_by_owner, score
from fedmap.training.train import load_values


@dataclass(frozen=True)
class Evaluation:
    """Metrics of one global model."""

    test_accuracy: float
    test_loss: float
    val_accuracy: float  # pooled over all clients' local test splits
    client_accuracy: torch.Tensor  # (num_clients,) float64; nan for a client with no split


class Evaluator:
    """Scores canonical value vectors with one reusable model.

    Parameters
    ----------
    model
        The architecture (its values are overwritten).
    layout
        Canonical order of the transmitted tensors.
    x_test, y_test
        Central test set on the model's device.
    x_local, y_local, owner
        All clients' local test samples concatenated, and the client id of each.
    num_clients
        Number of clients (length of ``client_accuracy``).
    """

    def __init__(
        self,
        model: nn.Module,
        layout: Layout,
        test: tuple[torch.Tensor, torch.Tensor],
        local: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        num_clients: int,
        batch_size: int = 128,
    ) -> None:
        self.model = model
        self.layout = layout
        self.test = test
        self.local = local
        self.num_clients = num_clients
        self.batch_size = batch_size

    def evaluate(self, values: torch.Tensor) -> Evaluation:
        """Load ``values`` (canonical vector) and score it everywhere."""
        device = self.test[0].device
        load_values(self.model, {k: v.to(device) for k, v in self.layout.unflatten(values).items()})
        test = score(self.model, *self.test, batch_size=self.batch_size)
        x_local, y_local, owner = self.local
        local = score(self.model, x_local, y_local, batch_size=self.batch_size)
        return Evaluation(
            test_accuracy=test.accuracy,
            test_loss=test.mean_loss,
            val_accuracy=local.accuracy,
            client_accuracy=accuracy_by_owner(local.correct, owner.cpu(), self.num_clients),
        )
