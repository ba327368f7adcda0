import torch

from fedmap.core.layout import Layout
from fedmap.core.mask import Mask
from fedmap.core.schedule import Schedule
from fedmap.methods.base import GlobalModel
from fedmap.methods.fedmap import FedMap


def model(values: torch.Tensor, mask: Mask | None = None, version: int = 0) -> GlobalModel:
    layout = Layout(("w",), ((10,),), (True,))
    return GlobalModel(values, mask or Mask.dense(layout), version)


def test_prune_step_is_an_instruction_with_the_magnitude_mask():
    strategy = FedMap(Schedule(1, 1, 0.9), rate=0.2)
    m = model(torch.arange(1.0, 11.0))
    assert strategy.plan(1, m).mask is None  # warm-up
    step = strategy.plan(2, m)
    assert step.prune is not None and step.prune.rate == 0.2
    assert step.mask.flat.tolist() == [False, False] + [True] * 8
    assert step.reset_values is None
    assert strategy.iteration == 1


def test_rewind_resets_kept_weights_to_initial_values_and_forces_a_bootstrap():
    init = torch.linspace(-1, 1, 10)
    strategy = FedMap(Schedule(0, 1, 0.9), rate=0.5, rewind_to=init)
    step = strategy.plan(1, model(torch.arange(1.0, 11.0)))
    assert step.prune is None  # clients cannot derive the mask from rewound values
    kept = step.mask.flat
    assert kept.tolist() == [False] * 5 + [True] * 5
    assert torch.equal(step.reset_values[kept], init[kept])
    assert torch.all(step.reset_values[~kept] == 0)


def test_guard_returns_to_the_last_mask_within_delta_and_stops():
    strategy = FedMap(Schedule(1, 1, 0.99, guard_delta=0.02), rate=0.5)
    dense = model(torch.arange(1.0, 11.0))
    strategy.observe(1, dense, 0.90)
    step = strategy.plan(2, dense)
    first = model(dense.values * step.mask.flat, step.mask, 1)
    strategy.observe(2, first, 0.89)  # within 2 points: the new fallback
    step = strategy.plan(3, first)
    second = model(first.values * step.mask.flat, step.mask, 2)
    strategy.observe(3, second, 0.70)  # costs 20 points
    revert = strategy.plan(4, second)
    assert revert.reset_values is not None and revert.mask.same_as(first.mask)
    assert torch.equal(revert.reset_values, first.values)
    assert strategy.iteration == 1
    assert strategy.plan(5, first).mask is None  # stopped for good
