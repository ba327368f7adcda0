import pytest
import torch

from fedmap.core.aggregate import aggregate, coordinate_median, trimmed_mean, weighted_mean
from fedmap.core.layout import Layout
from fedmap.core.mask import Mask, pack, unpack


def test_weighted_mean_by_hand():
    out = weighted_mean([torch.tensor([1.0, 0.0]), torch.tensor([4.0, 3.0])], [1, 2])
    assert out.tolist() == [3.0, 2.0]


def test_packed_fedavg_equals_dense_fedavg_restricted_to_the_mask():
    layout = Layout(("w", "b"), ((50,), (5,)), (True, False))
    gen = torch.Generator().manual_seed(0)
    flat = torch.rand(55, generator=gen) < 0.4
    flat[50:] = True
    mask = Mask(layout, flat)
    dense = [torch.randn(55, generator=gen) * mask.flat for _ in range(7)]
    weights = [3, 1, 4, 1, 5, 9, 2]
    packed_avg = weighted_mean([pack(d, mask) for d in dense], weights)
    dense_avg = weighted_mean(dense, weights)
    assert torch.equal(unpack(packed_avg, mask), dense_avg * mask.flat)
    assert torch.equal(packed_avg, pack(dense_avg, mask))


def test_robust_rules_by_hand():
    vs = [torch.tensor([1.0]), torch.tensor([2.0]), torch.tensor([100.0]), torch.tensor([3.0])]
    assert coordinate_median(vs).item() == 2.5
    assert coordinate_median(vs[:3]).item() == 2.0
    assert trimmed_mean(vs, 0.25).item() == 2.5
    assert aggregate(vs, [1, 1, 1, 1], "median").item() == 2.5
    with pytest.raises(ValueError, match="aggregation.rule"):
        aggregate(vs, [1, 1, 1, 1], "max")
    with pytest.raises(ValueError, match="zero client"):
        weighted_mean([], [])


def test_masked_mean_averages_each_coordinate_over_the_clients_that_kept_it():
    from fedmap.core.aggregate import masked_mean

    a = torch.tensor([1.0, 2.0, 0.0, 0.0])
    b = torch.tensor([3.0, 0.0, 5.0, 0.0])
    keep_a = torch.tensor([True, True, False, False])
    keep_b = torch.tensor([True, False, True, False])
    values, votes = masked_mean([a, b], [keep_a, keep_b], [1.0, 3.0])
    assert values.tolist() == [2.5, 2.0, 5.0, 0.0]
    assert votes.tolist() == [4.0, 1.0, 3.0, 0.0]
