"""ResNet-20 for 32x32 images (He et al. 2016, Section 4.2), with a choice of norm layer.

"Deep Residual Learning for Image Recognition": a 3x3 stem conv, then three stages
of three basic blocks with 16, 32 and 64 channels (the first block of stages two
and three halves H and W with stride 2), global average pooling and a linear head:
6n + 2 = 20 weighted layers for n = 3, and 269,722 parameters for 3 channels and
10 classes (the paper's "0.27M").

Shortcuts use the paper's option A: identity, and where a stage changes shape,
the input is subsampled with stride 2 and zero channels are appended. Option A has
no parameters, which keeps the count at the paper's 0.27M and leaves every
prunable tensor a real 3x3 conv or the head.

Normalisation:

- ``"batch"`` (BatchNorm2d), as in the paper. Its running mean and variance are
  float buffers; fedmap sends and averages them with the weights.
- ``"group"`` (GroupNorm with 2 groups). BatchNorm statistics are client-specific
  under non-IID data and averaging them across clients hurts accuracy (Hsieh et al.
  2020, "The Non-IID Data Quagmire of Decentralized Machine Learning"); GroupNorm
  has no running statistics, so nothing client-specific is averaged. Two groups is
  the setting Reddi et al. 2021 ("Adaptive Federated Optimization") used for CIFAR
  ResNets, and it divides 16, 32 and 64 evenly. GroupNorm has the same affine
  parameters as BatchNorm, so the parameter count is the same.

Initialisation is PyTorch's default (not the paper's He-normal), drawn from the
global generator in layer order; the caller seeds with ``torch.manual_seed``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fedmap.errors import ConfigError
from fedmap.models.shapes import check_image_shape, check_num_classes

NORMS = ("batch", "group")
GROUPNORM_GROUPS = 2
STAGE_CHANNELS = (16, 32, 64)
BLOCKS_PER_STAGE = 3


def make_norm(norm: str, channels: int) -> nn.Module:
    """Return the normalisation layer named ``norm`` for ``channels`` channels."""
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    return nn.GroupNorm(GROUPNORM_GROUPS, channels)


class BasicBlock(nn.Module):
    """Two 3x3 conv-norm layers with an option-A (parameter-free) shortcut.

    Parameters
    ----------
    channels_in, channels_out : int
        Channels before and after the block; ``channels_out >= channels_in``.
    stride : int
        Stride of the first conv; 2 halves H and W at the start of a stage.
    norm : {"batch", "group"}
        Normalisation layer after each conv.
    """

    def __init__(self, channels_in: int, channels_out: int, stride: int, norm: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels_in, channels_out, 3, stride=stride, padding=1, bias=False)
        self.norm1 = make_norm(norm, channels_out)
        self.conv2 = nn.Conv2d(channels_out, channels_out, 3, padding=1, bias=False)
        self.norm2 = make_norm(norm, channels_out)
        self.stride = stride
        self.extra_channels = channels_out - channels_in

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        """Match ``x`` to the block's output: subsample by stride, append zero channels."""
        x = x[:, :, :: self.stride, :: self.stride]  # (B, C_in, H', W')
        # F.pad pads the last axis first: (W left, W right, H top, H bottom, C front, C back)
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))  # (B, C_out, H', W')

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``relu(norm(conv(relu(norm(conv(x))))) + shortcut(x))``."""
        out = F.relu(self.norm1(self.conv1(x)))  # (B, C_out, H', W')
        out = self.norm2(self.conv2(out))  # (B, C_out, H', W')
        return F.relu(out + self.shortcut(x))  # (B, C_out, H', W')


class ResNet20(nn.Module):
    """CIFAR ResNet-20: stem, 3 stages x 3 basic blocks (16/32/64 channels), pool, head.

    Parameters
    ----------
    input_shape : sequence of int, default (3, 32, 32)
        ``(C, H, W)`` of one image, channels first. Global average pooling makes the
        head independent of H and W, so other sizes (e.g. 28x28) also work.
    num_classes : int, default 10
        Number of output logits.
    norm : {"batch", "group"}, default "batch"
        BatchNorm2d as in the paper, or GroupNorm with 2 groups (see the module notes).

    Raises
    ------
    ConfigError
        If ``input_shape`` is not ``(C, H, W)`` or ``norm`` is not a known name.
    """

    def __init__(
        self,
        input_shape: Sequence[int] = (3, 32, 32),
        num_classes: int = 10,
        norm: str = "batch",
    ) -> None:
        super().__init__()
        channels, height, width = check_image_shape("resnet20", input_shape)
        num_classes = check_num_classes("resnet20", num_classes)
        if norm not in NORMS:
            raise ConfigError(
                f"model.name='resnet20': norm must be one of {', '.join(NORMS)}; got {norm!r}"
            )
        self.input_shape = (channels, height, width)
        self.conv1 = nn.Conv2d(channels, STAGE_CHANNELS[0], 3, padding=1, bias=False)
        self.norm1 = make_norm(norm, STAGE_CHANNELS[0])
        self.stage1 = make_stage(STAGE_CHANNELS[0], STAGE_CHANNELS[0], 1, norm)
        self.stage2 = make_stage(STAGE_CHANNELS[0], STAGE_CHANNELS[1], 2, norm)
        self.stage3 = make_stage(STAGE_CHANNELS[1], STAGE_CHANNELS[2], 2, norm)
        self.head = nn.Linear(STAGE_CHANNELS[2], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits of shape ``(B, num_classes)`` for images of shape ``(B, C, H, W)``."""
        x = F.relu(self.norm1(self.conv1(x)))  # (B, 16, H, W)
        x = self.stage1(x)  # (B, 16, H, W)
        x = self.stage2(x)  # (B, 32, H/2, W/2)
        x = self.stage3(x)  # (B, 64, H/4, W/4)
        x = x.mean(dim=(2, 3))  # (B, 64) global average pool
        return self.head(x)  # (B, num_classes)


def make_stage(channels_in: int, channels_out: int, stride: int, norm: str) -> nn.Sequential:
    """Return one stage: a block that may change shape, then blocks that keep it."""
    blocks = [BasicBlock(channels_in, channels_out, stride, norm)]
    blocks += [BasicBlock(channels_out, channels_out, 1, norm) for _ in range(BLOCKS_PER_STAGE - 1)]
    return nn.Sequential(*blocks)
