"""FedDST: ERK counts, drop and regrow on the clients, the union re-pruned."""

from __future__ import annotations

import pytest
import torch

from fedmap.core.layout import Layout
from fedmap.core.mask import Mask, pack
from fedmap.methods.base import ClientTask, GlobalModel
from fedmap.methods.feddst import FedDST, drop_and_regrow, erk_counts, initial_mask
from fedmap.protocol.task import finish_client


def test_feddst_keeps_its_erk_counts_while_masks_change_and_regrow(simulate, reactivated):
    run = simulate("feddst", spy=True, rounds=12)
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
    assert all(
        run["records"][r].counts.bootstraps == len(run["records"][r].cohort) for r in changed
    )


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
    strategy = FedDST(0.5, 0.2, 2, 10)
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
    strategy = FedDST(0.9, 0.2, 4, 80)
    assert [r for r in range(1, 81) if strategy.is_readjustment(r)] == list(range(2, 40, 4))
    assert strategy.alpha(1) == pytest.approx(0.2)
    assert strategy.alpha(21) == pytest.approx(0.1)  # t = 20 of T_end = 40: cos = 0
    assert strategy.alpha(41) == 0.0
    every_round = FedDST(0.9, 0.2, 1, 10)  # ΔR = 1: the reference's round 0 too
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
