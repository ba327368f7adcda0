"""Checks of the input shape and class count that every model constructor shares.

A model built for the wrong input fails late, deep inside a matmul, with a message
about tensor sizes; checking here turns that into one :class:`ConfigError` that
names ``model.name`` and says which shape was expected and which arrived.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

from fedmap.errors import ConfigError


def check_num_classes(model_name: str, num_classes: int) -> int:
    """Return ``num_classes`` as an ``int`` after checking it is a positive integer.

    Parameters
    ----------
    model_name : str
        Registry name of the model being built, quoted in the message.
    num_classes : int
        Width of the output layer.

    Returns
    -------
    int
        The same value, as a plain ``int``.

    Raises
    ------
    TypeError
        If ``num_classes`` is not an integer (``bool`` is refused too).
    ConfigError
        If ``num_classes`` is smaller than 1.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral):
        raise TypeError(
            f"model.name={model_name!r}: num_classes must be an int, "
            f"got {type(num_classes).__name__}"
        )
    if num_classes < 1:
        raise ConfigError(f"model.name={model_name!r}: num_classes must be >= 1, got {num_classes}")
    return int(num_classes)


def check_input_shape(model_name: str, input_shape: Sequence[int]) -> tuple[int, ...]:
    """Return ``input_shape`` as a tuple of positive ints (one sample, no batch axis).

    Parameters
    ----------
    model_name : str
        Registry name of the model being built, quoted in the message.
    input_shape : sequence of int
        Shape of one input sample, e.g. ``(1, 28, 28)``.

    Returns
    -------
    tuple of int
        The shape with every entry a plain ``int``.

    Raises
    ------
    TypeError
        If ``input_shape`` is not a sequence of integers.
    ConfigError
        If it is empty or has an entry smaller than 1.
    """
    if isinstance(input_shape, (str, bytes)) or not isinstance(input_shape, Sequence):
        raise TypeError(
            f"model.name={model_name!r}: input_shape must be a tuple of ints, "
            f"got {type(input_shape).__name__}"
        )
    for dim in input_shape:
        if isinstance(dim, bool) or not isinstance(dim, numbers.Integral):
            raise TypeError(
                f"model.name={model_name!r}: input_shape must hold ints, got {tuple(input_shape)!r}"
            )
    shape = tuple(int(dim) for dim in input_shape)
    if not shape or min(shape) < 1:
        raise ConfigError(
            f"model.name={model_name!r} expects a non-empty input shape of positive sizes, "
            f"got {shape}"
        )
    return shape


def check_image_shape(model_name: str, input_shape: Sequence[int]) -> tuple[int, int, int]:
    """Return ``(C, H, W)`` after checking ``input_shape`` is one channels-first image.

    Parameters
    ----------
    model_name : str
        Registry name of the model being built, quoted in the message.
    input_shape : sequence of int
        Shape of one image, channels first (PyTorch layout).

    Returns
    -------
    tuple of int
        ``(channels, height, width)``.

    Raises
    ------
    ConfigError
        If the shape does not have exactly three entries.
    """
    shape = check_input_shape(model_name, input_shape)
    if len(shape) != 3:
        raise ConfigError(
            f"model.name={model_name!r} expects an image shape (C, H, W), got {shape}"
        )
    channels, height, width = shape
    return channels, height, width
