import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fedmap.core.layout import Layout
from fedmap.core.mask import Mask
from fedmap.core.prune import compute_mask, keep_top, num_to_prune, prune_to_density


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


def test_keep_top_breaks_ties_by_index():
    layout = Layout(("w",), ((6,),), (True,))
    base = Mask.dense(layout)
    scores = torch.tensor([1.0, 3.0, 3.0, 0.0, 3.0, 2.0], dtype=torch.float64)
    mask = keep_top(scores, layout.prunable_flat, 2, base)
    assert mask.flat.tolist() == [False, True, True, False, False, False]


def test_prune_to_density_by_layer_keeps_each_tensors_share():
    layout = Layout(("a", "b"), ((10,), (20,)), (True, True))
    values = torch.from_numpy(np.random.default_rng(0).normal(size=30).astype(np.float32))
    mask = prune_to_density(values, Mask.dense(layout), 0.3, "layer")
    assert int(mask.flat[:10].sum()) == 3 and int(mask.flat[10:].sum()) == 6
