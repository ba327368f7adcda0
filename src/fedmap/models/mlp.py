"""The 2NN of McMahan et al. (2017): the FedAvg paper's multilayer perceptron.

"Communication-Efficient Learning of Deep Networks from Decentralized Data",
Section 3: a fully connected net with two hidden layers of 200 units and ReLU.
On 28x28 inputs and 10 classes it has 199,210 parameters, all in Linear layers,
so every weight matrix is prunable.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import prod

import torch
from torch import nn

from fedmap.models.shapes import check_input_shape, check_num_classes


class MLP(nn.Module):
    """Flatten, then ``hidden`` fully connected ReLU layers, then a linear head.

    Parameters
    ----------
    input_shape : sequence of int
        Shape of one sample without the batch axis, e.g. ``(1, 28, 28)``; any rank,
        since the input is flattened.
    num_classes : int
        Number of output logits.
    hidden : sequence of int, default (200, 200)
        Widths of the hidden layers; the default is the FedAvg paper's 2NN.

    Notes
    -----
    Weights are PyTorch's default initialisation (``nn.Linear.reset_parameters``),
    drawn from the global generator in layer order: the caller seeds with
    ``torch.manual_seed`` before building, and no other random numbers are drawn.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        hidden: Sequence[int] = (200, 200),
    ) -> None:
        super().__init__()
        shape = check_input_shape("mlp", input_shape)
        num_classes = check_num_classes("mlp", num_classes)
        widths = [prod(shape), *(int(width) for width in hidden)]
        self.input_shape = shape
        self.hidden = nn.ModuleList(
            nn.Linear(width_in, width_out)
            for width_in, width_out in zip(widths[:-1], widths[1:], strict=True)
        )
        self.head = nn.Linear(widths[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits ``(B, num_classes)`` for a batch of shape ``(B, *input_shape)``."""
        x = x.flatten(start_dim=1)  # (B, prod(input_shape))
        for layer in self.hidden:
            x = torch.relu(layer(x))  # (B, width)
        return self.head(x)  # (B, num_classes)
