"""Model names, the constructor behind each name, and which tensors are pruned and sent.

The config names a model by ``model.name``; everything else in fedmap only needs
two lists from the built model, both in ``state_dict`` order (the canonical order
of the wire format): the tensors the mask covers (:func:`prunable_names`) and the
tensors the federation averages and sends (:func:`transmitted_names`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from fedmap.errors import ConfigError
from fedmap.models.cnn import FedAvgCNN
from fedmap.models.mlp import MLP
from fedmap.models.resnet20 import ResNet20
from fedmap.models.simple_cnn import SimpleCNN

MODEL_NAMES = ("mlp", "cnn", "simple_cnn", "resnet20")

_CONSTRUCTORS: dict[str, Callable[[Sequence[int], int], nn.Module]] = {
    "mlp": MLP,
    "cnn": FedAvgCNN,
    "simple_cnn": SimpleCNN,
    "resnet20": ResNet20,
}

# Layers whose weight is pruned. Biases and normalisation parameters stay dense:
# they are few, and pruning them hurts accuracy for almost no saving (docs/design.md §1).
PRUNABLE_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def build_model(name: str, input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """Build the model registered as ``name`` for inputs of ``input_shape``.

    Parameters
    ----------
    name : str
        One of :data:`MODEL_NAMES` (the config's ``model.name``).
    input_shape : sequence of int
        Shape of one sample without the batch axis, channels first for images.
    num_classes : int
        Number of output logits.

    Returns
    -------
    torch.nn.Module
        A freshly initialised model in training mode. Initialisation is PyTorch's
        default and draws only from the global generator, in layer order, so
        ``torch.manual_seed(s)`` before this call fixes the initial weights.
        ``resnet20`` is built with BatchNorm (its default).

    Raises
    ------
    ConfigError
        If ``name`` is unknown, or the model cannot take ``input_shape``.
    """
    if name not in _CONSTRUCTORS:
        raise ConfigError(
            f"model.name: unknown model {name!r}; valid names are {', '.join(MODEL_NAMES)}"
        )
    return _CONSTRUCTORS[name](tuple(input_shape), num_classes)


def prunable_names(model: nn.Module) -> list[str]:
    """Return the ``state_dict`` keys of every Conv1d/2d/3d and Linear weight, in order.

    Parameters
    ----------
    model : torch.nn.Module
        Any module; only its Conv and Linear submodules count.

    Returns
    -------
    list of str
        Keys such as ``"conv1.weight"``, in ``state_dict`` order. Biases and
        normalisation parameters are never listed.
    """
    weight_keys = {
        f"{prefix}.weight" if prefix else "weight"
        for prefix, module in model.named_modules()
        if isinstance(module, PRUNABLE_LAYERS)
    }
    return [key for key in model.state_dict() if key in weight_keys]


def transmitted_names(model: nn.Module) -> list[str]:
    """Return the ``state_dict`` keys of every floating-point tensor, in order.

    These are what the federation averages and sends: all parameters plus float
    buffers such as BatchNorm's ``running_mean`` and ``running_var``. Integer
    buffers (BatchNorm's ``num_batches_tracked``) are counters, not values to
    average, so they are left out.

    Parameters
    ----------
    model : torch.nn.Module
        Any module.

    Returns
    -------
    list of str
        Keys in ``state_dict`` order.
    """
    return [key for key, tensor in model.state_dict().items() if torch.is_floating_point(tensor)]
