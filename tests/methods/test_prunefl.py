"""PruneFL: the reconfiguration, and the initial pruning on one client at the run's target size."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import fedmap.methods.prunefl as ip
from fedmap.core.layout import Layout
from fedmap.core.mask import Mask, pack
from fedmap.core.prune import compute_mask
from fedmap.methods.base import ClientTask
from fedmap.methods.prunefl import initial_pruning, prunefl_adjust
from fedmap.models import build_model, prunable_names, transmitted_names
from fedmap.protocol.task import finish_client
from fedmap.training.train import TrainConfig

CONFIG = TrainConfig(batch_size=16, lr=0.1, momentum=0.9)


def setup(seed: int = 0) -> tuple[torch.nn.Module, Layout, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    model = build_model("mlp", (1, 8, 8), 10)
    state = model.state_dict()
    layout = Layout.from_state(
        {n: state[n] for n in transmitted_names(model)}, prunable_names(model)
    )
    x = torch.randn(200, 1, 8, 8)
    y = x.flatten(1)[:, :10].argmax(1)  # learnable labels
    return model, layout, x, y


def spy_adjust(monkeypatch: pytest.MonkeyPatch) -> list[Mask]:
    """Record the mask after every reconfiguration."""
    seen: list[Mask] = []
    real = ip.prunefl_adjust

    def recording(*args: Any, **kwargs: Any) -> Mask:
        seen.append(real(*args, **kwargs))
        return seen[-1]

    monkeypatch.setattr(ip, "prunefl_adjust", recording)
    return seen


def test_it_descends_by_at_most_30_percent_then_settles_at_the_target(monkeypatch):
    model, layout, x, y = setup()
    seen = spy_adjust(monkeypatch)
    result = initial_pruning(
        model, layout, Mask.dense(layout), x, y, 0.2, CONFIG, torch.Generator().manual_seed(0)
    )
    target = round(0.2 * layout.num_prunable)
    assert result.mask.num_kept_prunable == target
    sizes = [layout.num_prunable] + [m.num_kept_prunable for m in seen]
    assert all(b >= 0.7 * a - len(layout.names) for a, b in zip(sizes, sizes[1:], strict=False))
    descent = next(i for i, s in enumerate(sizes) if s == target)
    assert descent > 1  # 1.0 -> 0.2 takes several reconfigurations, not one prune
    assert sizes[descent] < 0.9 * sizes[descent - 1]  # so the step onto the target is no rest:
    assert len(seen) == descent + ip.SETTLED_AFTER  # five unchanged sizes after it stop the loop
    assert result.reconfigurations == len(seen)
    started = result.passes - (len(seen) - 1) * ip.ADJUST_EVERY  # the first one: at the start
    assert started >= 1 and (started - 1) % ip.CHECK_EVERY == 0
    trained = layout.flatten(model.state_dict())
    assert torch.all(trained[~result.mask.flat] == 0.0)
    # at the target, places freed by magnitude go by importance: some weight comes back
    comeback = torch.zeros(layout.numel, dtype=torch.bool)
    for before, after in zip(seen, seen[1:], strict=False):
        comeback |= after.flat & ~before.flat
    assert bool(comeback.any())


def test_it_trains_with_plain_sgd_on_ten_batches(monkeypatch):
    made: list[dict[str, Any]] = []
    real = torch.optim.SGD

    class Recording(real):  # type: ignore[misc, valid-type]
        def __init__(self, params: Any, **kwargs: Any) -> None:
            made.append(kwargs)
            super().__init__(params, **kwargs)

    monkeypatch.setattr(torch.optim, "SGD", Recording)
    monkeypatch.setattr(ip, "MAX_PASSES", 3)
    model, layout, x, y = setup()
    calls: list[int] = []
    real_step = ip.masked_step

    def counting(*args: Any) -> torch.Tensor:
        calls.append(len(args[4]))
        return real_step(*args)

    monkeypatch.setattr(ip, "masked_step", counting)
    initial_pruning(
        model, layout, Mask.dense(layout), x, y, 0.5, CONFIG, torch.Generator().manual_seed(0)
    )
    assert made == [{"lr": 0.1, "momentum": 0.0, "weight_decay": 0.0}]
    assert len(calls) == 3 * ip.BATCHES and set(calls) == {16}  # 10 batches of 16, 3 passes


def test_when_the_passes_run_out_it_prunes_to_the_target_by_magnitude(monkeypatch):
    monkeypatch.setattr(ip, "MAX_PASSES", 1)
    model, layout, x, y = setup()
    result = initial_pruning(
        model, layout, Mask.dense(layout), x, y, 0.1, CONFIG, torch.Generator().manual_seed(0)
    )
    assert result.passes == 1
    assert result.mask.num_kept_prunable == round(0.1 * layout.num_prunable)
    assert torch.all(layout.flatten(model.state_dict())[~result.mask.flat] == 0.0)


def test_it_starts_from_the_dense_model_only():
    model, layout, x, y = setup()
    half = compute_mask(layout.flatten(model.state_dict()), Mask.dense(layout), 0.5)
    with pytest.raises(ValueError, match="dense"):
        initial_pruning(model, layout, half, x, y, 0.2, CONFIG, torch.Generator())


def test_the_reply_carries_the_mask_the_client_chose():
    layout = Layout(("w", "b"), ((8,), (2,)), (True, False))
    mask = Mask.dense(layout)
    chosen = Mask(layout, torch.tensor([True, False] * 4 + [True, True]))
    values = torch.arange(1, 11.0) * chosen.flat
    task = ClientTask(prune_to=0.5, initial_pruning=True)
    update = finish_client(task, pack(values, mask), mask, chosen=chosen)
    assert update.own_mask and update.mask.same_as(chosen)  # not the top-|w| half
    assert torch.equal(update.packed, pack(values, chosen))
    with pytest.raises(ValueError, match="chose"):
        finish_client(task, pack(values, mask), mask)
    with pytest.raises(ValueError, match="prune_to"):
        ClientTask(initial_pruning=True)


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


def test_prunefl_starts_from_one_client_and_its_masks_change_and_regrow(simulate, reactivated):
    run = simulate("prunefl", spy=True, rounds=12)
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
