"""Random pruning: FedMap's schedule and wire, with random ranking."""

from __future__ import annotations

import torch

from fedmap.core.layout import Layout
from fedmap.core.mask import Mask
from fedmap.core.prune import compute_mask


def test_random_pruning_ignores_magnitudes():
    layout = Layout(("w", "b"), ((4000,), (10,)), (True, False))
    values = torch.cat([torch.linspace(0.001, 1.0, 4000), torch.zeros(10)])
    dense = Mask.dense(layout)
    by_magnitude = compute_mask(values, dense, 0.5, "global")
    by_chance = compute_mask(values, dense, 0.5, ranking="random")
    assert by_magnitude.num_kept == by_chance.num_kept  # the same count as FedMap's step
    assert not bool(by_magnitude.flat[:2000].any())  # magnitude prunes exactly the small half
    kept_small = int(by_chance.flat[:2000].sum())
    assert 900 < kept_small < 1100  # random keeps about half of the small ones
    # every party derives the same mask from the same values
    assert torch.equal(
        by_chance.flat, compute_mask(values.clone(), dense, 0.5, ranking="random").flat
    )
    nested = compute_mask(values, by_chance, 0.5, ranking="random")
    assert nested.is_subset_of(by_chance)


def test_random_method_runs_on_fedmaps_schedule_without_sending_masks(simulate):
    fedmap = simulate("fedmap")
    rand = simulate("random")
    assert [r.density for r in rand["records"]] == [r.density for r in fedmap["records"]]
    assert [r.bytes_cum for r in rand["records"]] == [r.bytes_cum for r in fedmap["records"]]
    assert not all(a.same_as(b) for a, b in zip(rand["masks"], fedmap["masks"], strict=True))
