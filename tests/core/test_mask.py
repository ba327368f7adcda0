import pytest
import torch

from fedmap.core.layout import Layout
from fedmap.core.mask import Mask, pack, unpack
from fedmap.errors import ProtocolError


def layout() -> Layout:
    return Layout(("w", "b"), ((2, 2), (2,)), (True, False))


def test_density_counts_prunable_weights_only():
    mask = Mask(layout(), torch.tensor([True, False, False, True, True, True]))
    assert mask.num_kept == 4
    assert mask.num_kept_prunable == 2
    assert mask.density == 0.5


def test_mask_cannot_prune_a_non_prunable_coordinate():
    with pytest.raises(ProtocolError, match="non-prunable"):
        Mask(layout(), torch.tensor([True, True, True, True, False, True]))


def test_pack_unpack_round_trip_canonical_order():
    mask = Mask(layout(), torch.tensor([True, False, False, True, True, True]))
    values = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    packed = pack(values, mask)
    assert packed.tolist() == [1.0, 4.0, 5.0, 6.0]
    assert unpack(packed, mask).tolist() == [1.0, 0.0, 0.0, 4.0, 5.0, 6.0]
    with pytest.raises(ProtocolError):
        unpack(packed[:3], mask)


def test_prunable_bits_round_trip_and_flatten_order():
    lay = layout()
    mask = Mask(lay, torch.tensor([False, True, True, False, True, True]))
    assert mask.prunable_bits().tolist() == [False, True, True, False]
    assert Mask.from_prunable_bits(lay, mask.prunable_bits()).same_as(mask)
    state = {"w": torch.tensor([[1.0, 2.0], [3.0, 4.0]]), "b": torch.tensor([5.0, 6.0])}
    assert lay.flatten(state).tolist() == [1, 2, 3, 4, 5, 6]
    assert torch.equal(lay.unflatten(lay.flatten(state))["w"], state["w"])


def test_fingerprint_changes_with_layout():
    a = layout()
    b = Layout(("w", "b"), ((2, 2), (2,)), (True, True))
    assert a.fingerprint != b.fingerprint
    assert a.fingerprint == layout().fingerprint
