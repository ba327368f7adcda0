"""How a round's validated replies become the next global model.

Packed replies on the model's mask are combined by the configured rule over the
kept coordinates and the result is kept exactly in the transport dtype, so every
client decodes precisely the server's numbers. Replies that carry their own masks
(client-local pruning, FedDST) are averaged per coordinate over the clients that
kept it, and the method chooses the new mask from the result; a changed mask is a
new mask version, which every client receives with the next round's bootstrap.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fedmap.core.aggregate import aggregate, masked_mean, weighted_mean
from fedmap.core.codec import Message, quantize
from fedmap.core.mask import Mask, unpack
from fedmap.methods.base import GlobalModel, Method


def fold_packed(
    model: GlobalModel, replies: Sequence[Message], rule: str, trim_fraction: float, dtype: str
) -> GlobalModel:
    """Combine replies packed with the model's mask into new values on the same mask."""
    packed = aggregate(
        [m.values for m in replies], [m.num_samples for m in replies], rule, trim_fraction
    )
    values = quantize(unpack(packed, model.mask), dtype)
    return GlobalModel(values, model.mask, model.version)


def fold_own_masks(
    model: GlobalModel,
    replies: Sequence[Message],
    masks: Sequence[Mask],
    method: Method,
    round: int,
    dtype: str,
) -> GlobalModel:
    """Per-coordinate FedAvg over the clients' own ``masks``; ``method`` picks the new mask."""
    values, votes = masked_mean(
        [unpack(m.values, mask) for m, mask in zip(replies, masks, strict=True)],
        [mask.flat for mask in masks],
        [m.num_samples for m in replies],
    )
    mask = method.merge(round, model, values, votes)
    values = quantize(values.masked_fill(~mask.flat, 0.0), dtype)
    if mask.same_as(model.mask):  # same support: clients in step keep their mask version
        return GlobalModel(values, model.mask, model.version)
    return GlobalModel(values, mask, model.version + 1)  # no client can derive it: bootstraps


def mean_statistics(statistics: Sequence[Message], weights: Sequence[int]) -> torch.Tensor:
    """The sample-weighted mean of the accepted clients' statistics (PruneFL's importance)."""
    return weighted_mean([m.values for m in statistics], list(weights))
