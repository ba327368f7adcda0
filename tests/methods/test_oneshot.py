"""One-shot pruning: one step to the target, right after the warm-up."""

from __future__ import annotations

import math

import pytest

from fedmap.runs.experiment import prepare


def test_one_shot_prunes_once_to_the_target_after_the_warm_up(simulate):
    run = simulate("oneshot")
    pruned = [r.round for r in run["records"] if r.pruned]
    assert pruned == [3]
    num_prunable = run["layout"].num_prunable
    for record in run["records"]:
        expected = (
            1.0 if record.round < 3 else 1 - math.floor(0.8 * num_prunable + 0.5) / num_prunable
        )
        assert record.density == pytest.approx(expected, abs=1e-12)
    assert all(m.same_as(run["masks"][2]) for m in run["masks"][2:])
    assert all(
        r.counts.bootstraps == 0 for r in run["records"][1:]
    )  # clients derive it: no mask sent


def test_one_shot_steps_once_even_when_its_count_rounds_down(simulate, tiny_config):
    num_prunable = prepare(tiny_config()).layout.num_prunable
    target = (math.floor(0.8 * num_prunable) + 0.4) / num_prunable  # t*n rounds down
    run = simulate("oneshot", pruning__target_sparsity=target)
    assert 1 - run["records"][-1].density < target  # just short of the target, as rounded
    assert [r.round for r in run["records"] if r.pruned] == [3]  # and no second step
