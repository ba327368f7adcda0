"""Each baseline's defining property, on tiny digits runs through the real round loop."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch

from fedmap.client.rules import ClientTask, drop_and_regrow, finish_client
from fedmap.core.codec import UPLINK, decode
from fedmap.core.layout import Layout
from fedmap.core.mask import Mask, pack
from fedmap.core.prune import compute_mask, erk_counts, keep_top, prune_to_density
from fedmap.runs.experiment import build_simulation, prepare
from fedmap.strategies.base import GlobalModel
from fedmap.strategies.feddst import FedDSTStrategy, initial_mask
from fedmap.strategies.gradual import cubic_sparsity, steps_to_target

SCHEDULE = {
    "rounds": 10,
    "pruning__warmup_rounds": 2,
    "pruning__rounds_per_step": 2,
    "pruning__rate": 0.3,
    "pruning__target_sparsity": 0.8,
    "client__fraction": 1.0,  # every client every round: only a changed mask needs a bootstrap
}


def simulate(tiny_config: Any, method: str, spy: bool = False, **overrides: Any) -> dict[str, Any]:
    """Run ``method`` on tiny digits; keep every round's global mask and, with ``spy``, replies."""
    config = tiny_config(**{**SCHEDULE, **overrides}, pruning__method=method)
    experiment = prepare(config)
    replies: dict[int, list[tuple[int, Any]]] = {}

    def intruder(rnd: int, sent: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
        layout = experiment.layout
        replies[rnd] = [(c, decode(d, layout.fingerprint, layout.num_prunable)) for c, d in sent]
        return []

    simulation = build_simulation(experiment, intruder if spy else None)
    masks, records = [], []
    for record in simulation.run(config.rounds):
        records.append(record)
        masks.append(simulation.server.model.mask)
    return {"masks": masks, "records": records, "replies": replies, "layout": experiment.layout}


def reactivated(masks: list[Mask]) -> int:
    """Coordinates pruned in one round's global mask and kept again in a later one."""
    count = 0
    for before, after in zip(masks, masks[1:], strict=False):
        count += int((~before.flat & after.flat).sum())
    return count


def test_client_local_masks_differ_between_clients_and_weights_reactivate(tiny_config):
    run = simulate(tiny_config, "local", spy=True)
    layout: Layout = run["layout"]
    pruning_rounds = [r for r, sent in run["replies"].items() if sent[0][1].mask_bits is not None]
    assert pruning_rounds == list(range(3, 11))  # every round after the warm-up
    for rnd in pruning_rounds:
        bits = [torch.from_numpy(m.mask_bits) for _, m in run["replies"][rnd]]
        assert all(m.kind == UPLINK for _, m in run["replies"][rnd])
        assert any(not torch.equal(bits[0], b) for b in bits[1:]), f"round {rnd}: masks agree"
        # each client kept the schedule's density of its own model
        steps = (rnd - 3) // 2 + 1
        expected = round((1 - 0.3) ** min(steps, steps_to_target(0.3, 0.8)) * layout.num_prunable)
        assert all(int(b.sum()) == expected for b in bits)
    # the global model is the union: denser than any client's
    final = run["records"][-1]
    assert final.density > (1 - 0.3) ** steps_to_target(0.3, 0.8)
    # a weight a client pruned comes back to it: another client kept it, so it is in the union
    # the client trains next, and it can win that client's next magnitude ranking
    back = 0
    for rnd in pruning_rounds[:-1]:
        before = {c: torch.from_numpy(m.mask_bits) for c, m in run["replies"][rnd]}
        after = {c: torch.from_numpy(m.mask_bits) for c, m in run["replies"][rnd + 1]}
        back += sum(int((~before[c] & after[c]).sum()) for c in before.keys() & after.keys())
    assert back > 0
    # the union mask reaches every client as a bootstrap, every round, and is charged
    assert all(r.bootstraps == len(r.cohort) for r in run["records"][3:])
    assert all(e.mask > 0 for r in run["records"][3:] for e in r.ledger)


def test_one_shot_prunes_once_to_the_target_after_the_warm_up(tiny_config):
    run = simulate(tiny_config, "oneshot")
    pruned = [r.round for r in run["records"] if r.pruned]
    assert pruned == [3]
    num_prunable = run["layout"].num_prunable
    for record in run["records"]:
        expected = (
            1.0 if record.round < 3 else 1 - math.floor(0.8 * num_prunable + 0.5) / num_prunable
        )
        assert record.density == pytest.approx(expected, abs=1e-12)
    assert all(m.same_as(run["masks"][2]) for m in run["masks"][2:])
    assert all(r.bootstraps == 0 for r in run["records"][1:])  # clients derive it: no mask sent


def test_one_shot_steps_once_even_when_its_count_rounds_down(tiny_config):
    num_prunable = prepare(tiny_config()).layout.num_prunable
    target = (math.floor(0.8 * num_prunable) + 0.4) / num_prunable  # t*n rounds down
    run = simulate(tiny_config, "oneshot", pruning__target_sparsity=target)
    assert 1 - run["records"][-1].density < target  # just short of the target, as rounded
    assert [r.round for r in run["records"] if r.pruned] == [3]  # and no second step


def test_the_cubic_schedule_hits_its_densities(tiny_config):
    run = simulate(tiny_config, "gradual", rounds=14)
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
    assert all(r.bootstraps == 0 for r in run["records"][1:])


def test_cubic_sparsity_formula():
    assert cubic_sparsity(0, 4, 0.9) == 0.0
    assert cubic_sparsity(4, 4, 0.9) == pytest.approx(0.9)
    assert cubic_sparsity(2, 4, 0.9) == pytest.approx(0.9 * (1 - 0.5**3))


def test_random_pruning_ignores_magnitudes():
    layout = Layout(("w", "b"), ((4000,), (10,)), (True, False))
    values = torch.cat([torch.linspace(0.001, 1.0, 4000), torch.zeros(10)])
    dense = Mask.dense(layout)
    by_magnitude = compute_mask(values, dense, 0.5, "global")
    by_chance = compute_mask(values, dense, 0.5, "random")
    assert by_magnitude.num_kept == by_chance.num_kept  # the same count as FedMap's step
    assert not bool(by_magnitude.flat[:2000].any())  # magnitude prunes exactly the small half
    kept_small = int(by_chance.flat[:2000].sum())
    assert 900 < kept_small < 1100  # random keeps about half of the small ones
    # every party derives the same mask from the same values
    assert torch.equal(by_chance.flat, compute_mask(values.clone(), dense, 0.5, "random").flat)
    nested = compute_mask(values, by_chance, 0.5, "random")
    assert nested.is_subset_of(by_chance)


def test_random_method_runs_on_fedmaps_schedule_without_sending_masks(tiny_config):
    fedmap = simulate(tiny_config, "fedmap")
    rand = simulate(tiny_config, "random")
    assert [r.density for r in rand["records"]] == [r.density for r in fedmap["records"]]
    assert [r.bytes_cum for r in rand["records"]] == [r.bytes_cum for r in fedmap["records"]]
    assert not all(a.same_as(b) for a, b in zip(rand["masks"], fedmap["masks"], strict=True))


def test_prunefl_starts_from_one_client_and_its_masks_change_and_regrow(tiny_config):
    run = simulate(tiny_config, "prunefl", spy=True, rounds=12)
    first = run["records"][0]
    assert len(first.cohort) == 1  # initial pruning on one client
    assert first.density == pytest.approx(0.2, abs=1e-3)
    masks = run["masks"]
    assert all(m.num_kept_prunable == masks[0].num_kept_prunable for m in masks)
    changed = [
        i + 2 for i, (a, b) in enumerate(zip(masks, masks[1:], strict=False)) if not a.same_as(b)
    ]
    assert changed, "the importance never changed the mask"
    assert reactivated(masks) > 0  # weights pruned earlier come back by importance
    layout: Layout = run["layout"]
    for before, after in zip(masks, masks[1:], strict=False):  # at most 30 % leave per tensor
        for i, is_prunable in enumerate(layout.prunable):
            part = layout.slice_of(i)
            kept = int(before.flat[part].sum())
            stayed = int((before.flat[part] & after.flat[part]).sum())
            assert not is_prunable or stayed >= kept - int(0.3 * kept)
    # importance travels on reconfiguration rounds (every 2nd): a second, dense uplink per client
    for record in run["records"][1:]:
        ups = [e for e in record.ledger if e.direction == "up"]
        per_client = 2 if record.round % 2 == 0 else 1
        assert len(ups) == per_client * len(record.cohort)
        if per_client == 2:
            stats = [e for e in ups if e.values == 4 * run["layout"].num_prunable]
            assert len(stats) == len(record.cohort)
            assert all(e.dense == 0 for e in stats)  # dense FedAvg sends no importance


def test_feddst_keeps_its_erk_counts_while_masks_change_and_regrow(tiny_config):
    run = simulate(tiny_config, "feddst", spy=True, rounds=12)
    masks, layout = run["masks"], run["layout"]
    counts = erk_counts(layout, 0.2)
    density = sum(counts) / layout.num_prunable
    assert all(r.density == pytest.approx(density, abs=1e-9) for r in run["records"])
    for mask in masks:  # every tensor keeps its ERK count, readjusted or not
        for i, is_prunable in enumerate(layout.prunable):
            if is_prunable:
                assert int(mask.flat[layout.slice_of(i)].sum()) == counts[i]
    readjusting = [2, 4, 6]  # rounds 2 + k*ΔR while t = round - 1 < T_end = 12 // 2
    for rnd, sent in run["replies"].items():  # clients send their own masks on those rounds
        carries = [m.mask_bits is not None for _, m in sent]
        assert all(carries) if rnd in readjusting else not any(carries)
    changed = [
        i + 2 for i, (a, b) in enumerate(zip(masks, masks[1:], strict=False)) if not a.same_as(b)
    ]
    assert changed and set(changed) <= set(readjusting)
    assert reactivated(masks) > 0
    # everyone gets the new mask as a bootstrap in the round after a readjustment
    assert all(run["records"][r].bootstraps == len(run["records"][r].cohort) for r in changed)


def test_feddst_erk_counts_follow_the_reference_formula():
    layout = Layout(
        ("c.weight", "c.bias", "f.weight", "f.bias"),
        ((4, 2, 3, 3), (4,), (5, 8), (5,)),
        (True, False, True, False),
    )
    # raw sparsities 1 - (2+4+3+3)/72 and 1 - (8+5)/40 over n = 76 and 45 (biases count),
    # scaled so that sum(s*n) = 0.5 * 121: 0.538 and 0.436, kept floor((1-s)*n) = 35, 25
    assert erk_counts(layout, 0.5) == [35, 0, 25, 0]


def test_feddst_initial_mask_keeps_each_tensors_largest_initial_weights():
    layout = Layout(("c.weight", "f.weight"), ((2, 1, 2, 2), (3, 4)), (True, True))
    conv = [0.1, -0.9, 0.3, 0.0, 0.2, 0.5, -0.6, 0.05]
    values = torch.tensor(conv + [0.01 * i for i in range(12)])
    # ERK at 50 %: raw sparsities 1/8 and 5/12, scaled by 10/6: keep floor(0.79*8) = 6
    # of the conv and floor(0.31*12) = 3 of the linear layer
    assert erk_counts(layout, 0.5) == [6, 3]
    mask = initial_mask(values, Mask.dense(layout), 0.5)
    assert mask.flat[:8].tolist() == [True, True, True, False, True, True, True, False]
    assert mask.flat[8:].tolist() == [False] * 9 + [True] * 3


def test_feddst_merge_reprunes_the_union_by_magnitude_then_votes():
    layout = Layout(("w",), ((6,),), (True,))
    current = Mask(layout, torch.tensor([True, True, True, False, False, False]))
    model = GlobalModel(torch.zeros(6), current, 0)
    strategy = FedDSTStrategy(0.5, 0.2, 2, 10)
    # two weights the cohort kept, two regrown (0.0); the regrown one with more votes fills
    values = torch.tensor([0.5, 0.0, 0.0, 0.0, 0.0, -0.9])
    votes = torch.tensor([2.0, 1.0, 0.0, 0.0, 3.0, 1.0])
    merged = strategy.merge(2, model, values, votes)
    assert merged.flat.tolist() == [True, False, False, False, True, True]
    # a union of nonzero weights larger than the count keeps the largest averaged |w|
    values = torch.tensor([0.5, 0.1, 0.2, 0.0, 0.3, -0.9])
    votes = torch.tensor([1.0, 9.0, 1.0, 0.0, 1.0, 1.0])
    merged = strategy.merge(2, model, values, votes)
    assert merged.flat.tolist() == [True, False, False, False, True, True]


def test_feddst_schedule_readjusts_every_delta_r_until_half_the_run():
    strategy = FedDSTStrategy(0.9, 0.2, 4, 80)
    assert [r for r in range(1, 81) if strategy.is_readjustment(r)] == list(range(2, 40, 4))
    assert strategy.alpha(1) == pytest.approx(0.2)
    assert strategy.alpha(21) == pytest.approx(0.1)  # t = 20 of T_end = 40: cos = 0
    assert strategy.alpha(41) == 0.0
    every_round = FedDSTStrategy(0.9, 0.2, 1, 10)  # ΔR = 1: the reference's round 0 too
    assert [r for r in range(1, 11) if every_round.is_readjustment(r)] == [1, 2, 3, 4, 5]
    task = strategy.client_task(2)
    assert task is not None and task.drop_to == pytest.approx(0.1 * (1 - strategy.alpha(2)))


def test_drop_and_regrow_drops_to_the_erk_counts_and_zeroes_what_it_grows():
    layout = Layout(("c.weight", "f.weight"), ((2, 1, 2, 2), (3, 4)), (True, True))
    assert erk_counts(layout, 0.5) == [6, 3] and erk_counts(layout, 0.35) == [5, 1]
    keep = torch.tensor([True] * 6 + [False] * 2 + [True] * 3 + [False] * 9)
    mask = Mask(layout, keep)
    values = torch.tensor([1.0, 2, 3, 4, 5, 6, 0, 0, 0.1, 0.2, 0.3] + [0.0] * 9)
    grad = torch.zeros(20)
    grad[0], grad[19], grad[15] = 9.0, 7.0, 5.0  # conv's just-dropped weight grows back
    new, grown = drop_and_regrow(values, grad, mask, 0.35)
    # per tensor down to the ERK count at 0.35 (conv drops 1, linear 2: not 30 % of each),
    # then back to the received count
    assert new.flat[:8].tolist() == [True] * 6 + [False] * 2
    assert new.flat[8:].nonzero().squeeze(1).tolist() == [2, 7, 11]
    assert grown.nonzero().squeeze(1).tolist() == [0, 15, 19]
    update = finish_client(ClientTask(drop_to=0.35), pack(values, mask), mask, grad, grad)
    sent = torch.zeros(20)
    sent[update.mask.flat] = update.packed
    assert update.own_mask and update.mask.same_as(new)
    assert sent[0] == 0.0  # regrown right after its drop: from 0.0, not its trained 1.0
    assert sent[1] == 2.0 and sent[10] == pytest.approx(0.3)  # kept weights keep their values


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
