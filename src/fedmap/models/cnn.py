"""The CNN of McMahan et al. (2017), the FedAvg paper's model for (E)MNIST.

Two 5x5 convolutions (32 and 64 channels, "same" padding) each followed by ReLU and
2x2 max pooling, a 512-unit fully connected ReLU layer and a linear head. On
``(1, 28, 28)`` inputs and 10 classes it has exactly 1,663,370 parameters, the
figure the paper reports. Because both pools halve the image exactly, the model
works for any height and width divisible by 4, such as the 8x8 scikit-learn digits.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fedmap.errors import ConfigError
from fedmap.models.shapes import check_image_shape, check_num_classes


class FedAvgCNN(nn.Module):
    """conv5x5(C→32) → pool → conv5x5(32→64) → pool → fc(→512) → fc(→classes).

    Parameters
    ----------
    input_shape : sequence of int
        ``(C, H, W)`` of one image, channels first; H and W divisible by 4.
    num_classes : int
        Number of output logits.

    Raises
    ------
    ConfigError
        If the shape is not ``(C, H, W)`` with H and W positive multiples of 4.

    Notes
    -----
    Weights are PyTorch's default initialisation, drawn from the global generator
    in layer order; the caller seeds with ``torch.manual_seed`` before building.
    """

    def __init__(self, input_shape: Sequence[int], num_classes: int) -> None:
        super().__init__()
        channels, height, width = check_image_shape("cnn", input_shape)
        num_classes = check_num_classes("cnn", num_classes)
        if height % 4 or width % 4:
            raise ConfigError(
                "model.name='cnn' expects (C, H, W) with H and W divisible by 4 "
                f"(two 2x2 poolings), got {(channels, height, width)}"
            )
        self.input_shape = (channels, height, width)
        self.conv1 = nn.Conv2d(channels, 32, kernel_size=5, padding=2)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=5, padding=2)
        self.fc1 = nn.Linear(64 * (height // 4) * (width // 4), 512)
        self.fc2 = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits of shape ``(B, num_classes)`` for images of shape ``(B, C, H, W)``."""
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)  # (B, 32, H/2, W/2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)  # (B, 64, H/4, W/4)
        x = x.flatten(start_dim=1)  # (B, 64 * H/4 * W/4)
        x = F.relu(self.fc1(x))  # (B, 512)
        return self.fc2(x)  # (B, num_classes)
