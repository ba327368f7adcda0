"""Apple pfl-research's ``simple_cnn`` for CIFAR-10, in PyTorch.

Source checked: ``apple/pfl-research``, ``benchmarks/model/pytorch/cnn.py``,
function ``simple_cnn``. Its layers are, in order: conv3x3(3→32, no padding), ReLU,
conv3x3(32→64, no padding), ReLU, maxpool 2x2, Dropout(0.25), flatten,
Linear(12544→128), ReLU, Dropout(0.5), Linear(128→10); 1,626,442 parameters.

Kept faithfully: every layer, both dropout rates (they are part of the benchmark's
regularisation, and dropout has no parameters, so it changes no tensor that the
federation sends or prunes). Deliberate differences:

- Layout: pfl-research takes NHWC images and transposes them inside the model;
  fedmap's data layer yields NCHW tensors, so this model takes ``(B, 3, 32, 32)``.
- Initialisation: pfl-research re-initialises conv and linear weights with Glorot
  uniform to match its TF2 twin; fedmap uses PyTorch's default initialisation for
  every model, so one ``torch.manual_seed`` gives one documented init everywhere.
- Input shape: pfl-research derives sizes from a square input; here the model is
  the 32x32x3 benchmark model and refuses any other shape, because its only job is
  to reproduce that benchmark (use ``cnn`` or ``resnet20`` for other images).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fedmap.errors import ConfigError
from fedmap.models.shapes import check_image_shape, check_num_classes

CIFAR_SHAPE = (3, 32, 32)


class SimpleCNN(nn.Module):
    """Two valid 3x3 convolutions, one max pool and a 128-unit dense layer, with dropout.

    Parameters
    ----------
    input_shape : sequence of int, default (3, 32, 32)
        Must be ``(3, 32, 32)``; accepted as an argument so the registry can check it.
    num_classes : int, default 10
        Number of output logits.

    Raises
    ------
    ConfigError
        If ``input_shape`` is not ``(3, 32, 32)``.

    Notes
    -----
    Dropout makes training-mode outputs depend on the global generator; call
    ``model.eval()`` for deterministic evaluation. Weights are PyTorch's default
    initialisation, drawn from the global generator in layer order.
    """

    def __init__(self, input_shape: Sequence[int] = CIFAR_SHAPE, num_classes: int = 10) -> None:
        super().__init__()
        shape = check_image_shape("simple_cnn", input_shape)
        num_classes = check_num_classes("simple_cnn", num_classes)
        if shape != CIFAR_SHAPE:
            raise ConfigError(
                f"model.name='simple_cnn' expects input shape {CIFAR_SHAPE} (CIFAR-10), got {shape}"
            )
        self.input_shape = shape
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3)
        self.dropout_conv = nn.Dropout(0.25)
        self.fc1 = nn.Linear(64 * 14 * 14, 128)
        self.dropout_fc = nn.Dropout(0.5)
        self.fc2 = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits of shape ``(B, num_classes)`` for images of shape ``(B, 3, 32, 32)``."""
        x = F.relu(self.conv1(x))  # (B, 32, 30, 30)
        x = F.relu(self.conv2(x))  # (B, 64, 28, 28)
        x = self.dropout_conv(F.max_pool2d(x, 2))  # (B, 64, 14, 14)
        x = x.flatten(start_dim=1)  # (B, 12544)
        x = self.dropout_fc(F.relu(self.fc1(x)))  # (B, 128)
        return self.fc2(x)  # (B, num_classes)
