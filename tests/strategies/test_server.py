import math

import pytest
import torch

from fedmap.client.protocol import ClientState, encode_reply, receive_downlink
from fedmap.core.codec import UPLINK, Message, encode
from fedmap.core.layout import Layout
from fedmap.errors import UpdateRejected
from fedmap.strategies.base import DenseStrategy
from fedmap.strategies.server import Server


def setup():
    layout = Layout(("w", "b"), ((8, 4), (8,)), (True, False))
    server = Server(DenseStrategy(), layout, torch.randn(layout.numel))
    server.start_round(1)
    encoded, _ = server.downlink(-1)
    state = receive_downlink(encoded.data, ClientState(), layout).state
    return layout, server, state


def reply(layout, state, values, **kw):
    args = dict(round=1, num_samples=5, train_loss=0.2, dtype="float32", layout=layout)
    args.update(kw)
    return encode_reply(values, state, **args).data


def test_valid_reply_is_accepted():
    layout, server, state = setup()
    assert server.read_reply(reply(layout, state, torch.ones(layout.numel))).num_samples == 5


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda L, s: reply(L, s, torch.ones(L.numel), round=2), "round"),
        (lambda L, s: reply(L, s, torch.ones(L.numel), dtype="float16"), "dtype"),
        (lambda L, s: reply(L, s, torch.full((L.numel,), math.nan)), "NaN"),
        (lambda L, s: reply(L, s, torch.full((L.numel,), math.inf)), "NaN or Inf"),
        (lambda L, s: reply(L, s, torch.ones(L.numel), num_samples=0), "samples"),
        (
            lambda L, s: (
                encode(Message(UPLINK, 1, 0, torch.ones(3), num_samples=1), L.fingerprint).data
            ),
            "length",
        ),
        (
            lambda L, s: (
                encode(
                    Message(UPLINK, 1, 7, torch.ones(L.numel), num_samples=1), L.fingerprint
                ).data
            ),
            "epoch",
        ),
        (lambda L, s: b"garbage" * 10, "undecodable"),
    ],
)
def test_invalid_replies_are_rejected_and_never_reach_the_model(make, reason):
    layout, server, state = setup()
    before = server.model.values.clone()
    with pytest.raises(UpdateRejected, match=reason):
        server.read_reply(make(layout, state))
    server.finish_round([])
    assert torch.equal(server.model.values, before)
