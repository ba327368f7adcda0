"""Evaluation of one model on many samples, grouped by who owns them.

In FedMap every client holds the same global model, so the accuracy on every
client's local test split comes from one batched pass over all those splits
together, grouped by owner afterwards, instead of one pass per client.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class Scores:
    """Per-sample correctness and loss (CPU tensors)."""

    correct: torch.Tensor  # bool (n,)
    loss: torch.Tensor  # float32 (n,)

    @property
    def accuracy(self) -> float:
        """Fraction correct (nan for no samples)."""
        return float(self.correct.float().mean()) if len(self.correct) else float("nan")

    @property
    def mean_loss(self) -> float:
        """Mean cross-entropy (nan for no samples)."""
        return float(self.loss.mean()) if len(self.loss) else float("nan")


def score(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 128) -> Scores:
    """Per-sample correctness and loss of ``model`` on ``(x, y)`` (eval mode, no grad)."""
    model.eval()
    correct, losses = [], []
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            logits = model(x[start : start + batch_size])
            target = y[start : start + batch_size]
            correct.append((logits.argmax(dim=1) == target).cpu())
            losses.append(F.cross_entropy(logits, target, reduction="none").float().cpu())
    if not correct:
        return Scores(torch.zeros(0, dtype=torch.bool), torch.zeros(0))
    return Scores(torch.cat(correct), torch.cat(losses))


def accuracy_by_owner(correct: torch.Tensor, owner: torch.Tensor, num_owners: int) -> torch.Tensor:
    """Accuracy per owner (num_owners,) from per-sample correctness; nan where none."""
    hits = torch.zeros(num_owners, dtype=torch.float64).index_add_(0, owner, correct.double())
    counts = torch.zeros(num_owners, dtype=torch.float64).index_add_(
        0, owner, torch.ones_like(correct, dtype=torch.float64)
    )
    return hits / counts
