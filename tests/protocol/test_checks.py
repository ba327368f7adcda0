"""What a reply's own mask must satisfy, by the kind of task the round set (pure checks)."""

from __future__ import annotations

import torch

from fedmap.core.layout import Layout
from fedmap.core.mask import Mask
from fedmap.methods.base import ClientTask
from fedmap.protocol.checks import own_mask_problem

LAYOUT = Layout(("a", "bias", "b"), ((4,), (2,), (4,)), (True, False, True))


def mask(a: list[int], b: list[int]) -> Mask:
    flat = torch.tensor([*map(bool, a), True, True, *map(bool, b)])
    return Mask(LAYOUT, flat)


MODEL = mask([1, 1, 1, 0], [1, 1, 0, 0])  # 3 kept in a, 2 in b


def test_a_drop_and_regrow_must_keep_each_tensors_count():
    task = ClientTask(drop_to=0.3)
    moved = mask([0, 1, 1, 1], [0, 0, 1, 1])  # different weights, same counts: fine
    assert own_mask_problem(moved, MODEL, task) is None
    shifted = mask([1, 1, 1, 1], [1, 0, 0, 0])  # same total, one moved between tensors
    assert own_mask_problem(shifted, MODEL, task) == "reply's mask changes the kept count of a"
    denser = mask([1, 1, 1, 0], [1, 1, 1, 1])
    assert own_mask_problem(denser, MODEL, task) == "reply's mask changes the kept count of b"


def test_a_client_local_prune_keeps_the_rounds_count_inside_the_model():
    task = ClientTask(prune_to=0.4)  # round(0.4 * 8) = 3 of the 8 prunable weights
    assert own_mask_problem(mask([1, 1, 0, 0], [1, 0, 0, 0]), MODEL, task) is None
    outside = mask([1, 1, 0, 1], [0, 0, 0, 0])  # index 3 of a was pruned globally
    assert "the global model has pruned" in str(own_mask_problem(outside, MODEL, task))
    fewer = mask([1, 0, 0, 0], [1, 0, 0, 0])
    assert own_mask_problem(fewer, MODEL, task) == "reply's mask keeps 2 weights, the round asks 3"


def test_a_task_that_sends_no_mask_asks_nothing_of_one():
    assert own_mask_problem(MODEL, MODEL, ClientTask(importance=True)) is None
