"""Carrying out a round's client task: plain replies, own masks, statistics."""

from __future__ import annotations

import pytest
import torch

from fedmap.core.layout import Layout
from fedmap.core.mask import Mask, pack
from fedmap.core.prune import prune_to_density
from fedmap.methods.base import ClientTask
from fedmap.protocol.task import finish_client


def test_finish_client_for_each_task():
    layout = Layout(("w", "b"), ((8,), (2,)), (True, False))
    mask = Mask.dense(layout)
    values = torch.tensor([0.1, -0.9, 0.3, 0.05, 0.7, -0.2, 0.6, 0.01, 1.0, 2.0])
    plain = finish_client(None, pack(values, mask), mask)
    assert not plain.own_mask and torch.equal(plain.packed, values)
    local = finish_client(ClientTask(prune_to=0.5), pack(values, mask), mask)
    assert local.own_mask and local.mask.num_kept_prunable == 4
    assert local.mask.same_as(prune_to_density(values, mask, 0.5))
    stats = finish_client(
        ClientTask(importance=True), pack(values, mask), mask, torch.zeros(10), torch.ones(10)
    )
    assert not stats.own_mask and stats.importance is not None and stats.importance.numel() == 8
    with pytest.raises(ValueError, match="gradient"):
        finish_client(ClientTask(drop_to=0.1), pack(values, mask), mask)
