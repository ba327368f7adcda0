import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fedmap.core.layout import Layout
from fedmap.core.mask import Mask
from fedmap.core.prune import compute_mask, num_to_prune, prunefl_adjust


def small_layout() -> Layout:
    # weight (2x3) prunable, bias (2) not, weight2 (4) prunable
    return Layout(("w1", "b1", "w2"), ((2, 3), (2,), (4,)), (True, False, True))


def test_num_to_prune_rounds_half_up():
    assert num_to_prune(10, 0.2) == 2
    assert num_to_prune(10, 0.25) == 3  # 2.5 rounds up
    assert num_to_prune(3, 0.1) == 0
    assert num_to_prune(0, 0.5) == 0
    with pytest.raises(ValueError):
        num_to_prune(10, 1.5)


def test_global_prune_removes_smallest_magnitudes_by_hand():
    layout = small_layout()
    #                 w1 (6)                        b1 (2)     w2 (4)
    values = torch.tensor([0.5, -0.1, 0.3, 2.0, -0.05, 1.0, 0.0, 0.0, 0.2, -3.0, 0.01, 0.4])
    mask = compute_mask(values, Mask.dense(layout), rate=0.3, scope="global")
    # 10 prunable; 3 smallest |w|: 0.01 (idx 10), 0.05 (idx 4), 0.1 (idx 1). Biases never pruned.
    expected = torch.ones(12, dtype=torch.bool)
    expected[[10, 4, 1]] = False
    assert torch.equal(mask.flat, expected)
    assert mask.num_kept_prunable == 7


def test_layer_scope_prunes_each_tensor_separately():
    layout = small_layout()
    values = torch.tensor([0.5, -0.1, 0.3, 2.0, -0.05, 1.0, 0.0, 0.0, 0.2, -3.0, 0.01, 0.4])
    mask = compute_mask(values, Mask.dense(layout), rate=0.5, scope="layer")
    # w1: prune 3 of 6 -> 0.05, 0.1, 0.3 ; w2: prune 2 of 4 -> 0.01, 0.2
    expected = torch.ones(12, dtype=torch.bool)
    expected[[4, 1, 2, 10, 8]] = False
    assert torch.equal(mask.flat, expected)


def test_ties_prune_lower_flat_index_first():
    layout = Layout(("w",), ((6,),), (True,))
    values = torch.tensor([1.0, -1.0, 1.0, 1.0, -1.0, 1.0])  # all |w| equal
    mask = compute_mask(values, Mask.dense(layout), rate=0.5)
    assert mask.flat.tolist() == [False, False, False, True, True, True]


def test_pruned_coordinates_are_ignored_whatever_they_hold():
    layout = Layout(("w",), ((4,),), (True,))
    first = Mask(layout, torch.tensor([True, False, True, True]))
    values = torch.tensor([3.0, 0.0, 1.0, 2.0])
    mask = compute_mask(values, first, rate=0.34)  # 3 remaining -> prune 1: index 2
    assert mask.flat.tolist() == [True, False, False, True]


def test_non_finite_values_are_refused():
    layout = Layout(("w",), ((3,),), (True,))
    with pytest.raises(Exception, match="non-finite"):
        compute_mask(torch.tensor([1.0, math.nan, 2.0]), Mask.dense(layout), 0.5)


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 40), min_size=1, max_size=4),
    rate=st.floats(0.05, 0.9),
    steps=st.integers(1, 6),
    seed=st.integers(0, 2**31),
    levels=st.integers(1, 5),
    scope=st.sampled_from(["global", "layer"]),
)
def test_masks_nest_are_exact_and_deterministic(sizes, rate, steps, seed, levels, scope):
    names = tuple(f"t{i}" for i in range(len(sizes)))
    layout = Layout(names, tuple((n,) for n in sizes), tuple(True for _ in sizes))
    gen = torch.Generator().manual_seed(seed)
    # few distinct magnitude levels -> many ties
    values = torch.randint(-levels, levels + 1, (layout.numel,), generator=gen).float()
    mask = Mask.dense(layout)
    for _ in range(steps):
        before = mask
        mask = compute_mask(values, before, rate, scope)
        again = compute_mask(values.clone(), before, rate, scope)
        assert mask.same_as(again)  # deterministic
        assert mask.is_subset_of(before)  # nested
        if scope == "global":
            removed = before.num_kept_prunable - mask.num_kept_prunable
            assert removed == num_to_prune(before.num_kept_prunable, rate)  # exact count
            kept_mag = values.abs()[mask.flat]
            gone_mag = values.abs()[before.flat & ~mask.flat]
            if len(kept_mag) and len(gone_mag):
                assert gone_mag.max() <= kept_mag.min()  # magnitude order respected
        values = values * mask.flat


@given(
    st.lists(st.sampled_from([0.0, 0.5, 1.0, 2.0, -0.0]), min_size=1, max_size=40),
    st.integers(0, 45),
)
def test_smallest_equals_the_first_of_a_stable_sort(values, count):
    from fedmap.core.prune import smallest

    tensor = torch.tensor(values)
    expected = torch.sort(torch.sort(tensor, stable=True).indices[:count]).values
    assert torch.equal(smallest(tensor, count), expected)


def test_prunefl_adjust_drops_by_magnitude_per_tensor_and_refills_by_importance():
    layout = Layout(("a", "b", "bias"), ((10,), (10,), (2,)), (True, True, False))
    keep = torch.tensor([True] * 10 + [True] * 5 + [False] * 5 + [True] * 2)
    mask = Mask(layout, keep)
    values = torch.cat([torch.arange(1, 11.0), torch.arange(1, 11.0), torch.zeros(2)]) * keep
    importance = torch.zeros(22)
    importance[0] = 9.0  # the smallest weight of "a": dropped by magnitude, back by importance
    importance[19] = 8.0  # never kept in "b": regrows
    importance[18] = 7.0
    new = prunefl_adjust(values, importance, mask, min_kept=13, max_decrease=0.3)
    # int(0.3 * 10) = 3 leave "a" (indices 0-2), int(0.3 * 5) = 1 leaves "b" (index 10)
    # 11 survivors; 2 refill places go to indices 0 and 19, not 18
    kept = set(new.flat.nonzero().squeeze(1).tolist())
    assert kept == {0, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14, 19, 20, 21}
    assert new.num_kept_prunable == 13


def test_prunefl_adjust_keeps_the_survivors_when_they_reach_the_size():
    layout = Layout(("a",), ((10,),), (True,))
    mask = Mask.dense(layout)
    values = torch.arange(1, 11.0)
    importance = torch.arange(10, 0, -1.0)  # the small weights matter most, but none comes back
    new = prunefl_adjust(values, importance, mask, min_kept=2, max_decrease=0.3)
    assert new.flat.tolist() == [False] * 3 + [True] * 7
    with pytest.raises(ValueError, match="max_decrease"):
        prunefl_adjust(values, importance, mask, min_kept=2, max_decrease=1.5)
