"""Gradual pruning: the cubic schedule's densities on FedMap's loop."""

from __future__ import annotations

import pytest

from fedmap.methods.gradual import cubic_sparsity, steps_to_target


def test_the_cubic_schedule_hits_its_densities(simulate):
    run = simulate("gradual", rounds=14)
    steps = steps_to_target(0.3, 0.8)  # FedMap's count at the same rate: 5
    assert steps == 5
    pruned = [r for r in run["records"] if r.pruned]
    assert [r.round for r in pruned] == [3, 5, 7, 9, 11]
    num_prunable = run["layout"].num_prunable
    for k, record in enumerate(pruned, start=1):
        wanted = 1 - cubic_sparsity(k, steps, 0.8)
        assert abs(record.density - wanted) <= 1.5 / num_prunable, (k, record.density, wanted)
    shares = [
        1 - b.density / a.density
        for a, b in zip([run["records"][1]] + pruned, pruned, strict=False)
    ]
    assert shares == sorted(shares, reverse=True)  # big steps first, small ones near the target
    assert run["records"][-1].density == pruned[-1].density  # no step past the target
    assert all(r.counts.bootstraps == 0 for r in run["records"][1:])


def test_cubic_sparsity_formula():
    assert cubic_sparsity(0, 4, 0.9) == 0.0
    assert cubic_sparsity(4, 4, 0.9) == pytest.approx(0.9)
    assert cubic_sparsity(2, 4, 0.9) == pytest.approx(0.9 * (1 - 0.5**3))
