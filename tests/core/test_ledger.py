import numpy as np
import torch

from fedmap.core.codec import DOWNLINK, HEADER_NBYTES, Message, encode
from fedmap.core.layout import Layout
from fedmap.core.ledger import ledger_entry, sum_entries
from fedmap.core.mask import Mask, pack


def test_ledger_equals_encoded_length_and_prices_alternatives_by_hand():
    layout = Layout(("w", "b"), ((10,), (2,)), (True, False))
    flat = torch.ones(12, dtype=torch.bool)
    flat[:7] = False  # 3 of 10 prunable kept, plus 2 biases: 5 values
    mask = Mask(layout, flat)
    values = torch.arange(12.0)
    for dtype, size in (("float32", 4), ("float16", 2)):
        bits = mask.prunable_bits().numpy()
        encoded = encode(
            Message(DOWNLINK, 1, 0, pack(values, mask), dtype, mask_bits=bits), layout.fingerprint
        )
        entry = ledger_entry(encoded, round=1, client=0, direction="down", mask=mask, dtype=dtype)
        assert entry.total == len(encoded.data)
        assert entry.header + entry.mask + entry.values == entry.total
        assert entry.header == HEADER_NBYTES
        assert entry.values == 5 * size
        assert entry.dense == HEADER_NBYTES + 12 * size
        assert entry.bitmap == HEADER_NBYTES + 2 + 5 * size  # ceil(10/8) = 2 bytes of mask
        assert entry.coo == HEADER_NBYTES + 3 * (4 + size) + 2 * size


def test_round_sums_split_directions():
    layout = Layout(("w",), ((4,),), (True,))
    mask = Mask.dense(layout)
    encoded = encode(Message(DOWNLINK, 1, 0, torch.zeros(4)), layout.fingerprint)
    down = ledger_entry(encoded, round=1, client=0, direction="down", mask=mask, dtype="float32")
    up = ledger_entry(encoded, round=1, client=0, direction="up", mask=mask, dtype="float32")
    totals = sum_entries([down, up, up])
    assert totals.down == len(encoded.data)
    assert totals.up == 2 * len(encoded.data)
    assert totals.total == 3 * len(encoded.data)
    assert np.isclose(totals.dense, 3 * (HEADER_NBYTES + 16))
