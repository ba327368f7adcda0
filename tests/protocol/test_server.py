import math

import pytest
import torch

from fedmap.core.codec import UPLINK, Message, PruneInstruction, encode
from fedmap.core.layout import Layout
from fedmap.core.mask import Mask
from fedmap.errors import UpdateRejected
from fedmap.methods.dense import DenseFedAvg
from fedmap.protocol.client import ClientState, encode_reply, receive_downlink
from fedmap.protocol.server import Server


def setup():
    layout = Layout(("w", "b"), ((8, 4), (8,)), (True, False))
    server = Server(DenseFedAvg(), layout, torch.randn(layout.numel))
    server.start_round(1)
    encoded, _ = server.downlink(-1, client=0)
    state = receive_downlink(encoded.data, ClientState(), layout).state
    return layout, server, state


def reply(layout, state, values, **kw):
    args = dict(round=1, num_samples=5, train_loss=0.2, dtype="float32", layout=layout)
    args.update(kw)
    return encode_reply(values, state, **args).data


def test_valid_reply_is_accepted():
    layout, server, state = setup()
    assert server.read_reply(reply(layout, state, torch.ones(layout.numel)), 0).num_samples == 5


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
            "mask version",
        ),
        (lambda L, s: b"garbage" * 10, "undecodable"),
        (
            lambda L, s: (
                encode(
                    Message(
                        UPLINK,
                        1,
                        0,
                        torch.ones(L.numel),
                        num_samples=1,
                        prune=PruneInstruction(0.5),
                    ),
                    L.fingerprint,
                ).data
            ),
            "prune instruction",
        ),
    ],
)
def test_invalid_replies_are_rejected_and_never_reach_the_model(make, reason):
    layout, server, state = setup()
    before = server.model.values.clone()
    with pytest.raises(UpdateRejected, match=reason):
        server.read_reply(make(layout, state), 0)
    server.finish_round([])
    assert torch.equal(server.model.values, before)


def test_reply_from_an_unknown_client_is_refused():
    layout, server, state = setup()
    with pytest.raises(UpdateRejected, match="unknown client 7"):
        server.read_reply(reply(layout, state, torch.ones(layout.numel)), 7)


def test_second_reply_from_the_same_client_is_refused():
    layout, server, state = setup()
    data = reply(layout, state, torch.ones(layout.numel))
    server.read_reply(data, 0)
    with pytest.raises(UpdateRejected, match="second reply from client 0"):
        server.read_reply(data, 0)


def test_norm_screen_refuses_only_the_outlier_and_the_mean_never_sees_it():
    layout = Layout(("w",), ((50,),), (True,))
    start = torch.zeros(layout.numel)
    server = Server(DenseFedAvg(), layout, start, norm_threshold=5.0)
    server.start_round(1)
    gen = torch.Generator().manual_seed(0)
    replies = []
    for client in range(6):
        encoded, _ = server.downlink(-1, client)
        state = receive_downlink(encoded.data, ClientState(), layout).state
        scale = 100.0 if client == 3 else 1.0
        update = scale * torch.randn(layout.numel, generator=gen)
        replies.append((client, server.read_reply(reply(layout, state, update), client)))
    screening = server.screen(replies)
    assert [c for c, _ in screening.rejected] == [3]
    assert "norm" in screening.rejected[0][1]
    server.finish_round([m for _, m in screening.accepted])
    honest = torch.stack([m.values for c, m in replies if c != 3]).mean(0)
    assert torch.allclose(server.model.values, honest, atol=1e-6)


def test_norm_screen_is_off_for_tiny_cohorts_and_when_disabled():
    layout, server, state = setup()
    message = server.read_reply(reply(layout, state, 1e6 * torch.ones(layout.numel)), 0)
    assert server.screen([(0, message)]).rejected == []
    server.norm_threshold = math.inf
    assert server.screen([(0, message)] * 5).rejected == []


def test_client_that_took_this_rounds_step_in_a_failed_attempt_gets_values_not_a_bootstrap():
    from fedmap.core.prune import compute_mask
    from fedmap.methods.base import Method, Step

    class PruneRound2(Method):
        def plan(self, round, model):
            if round != 2:
                return Step()
            mask = compute_mask(model.values, model.mask, 0.5, "global")
            return Step(prune=PruneInstruction(0.5), mask=mask)

    layout = Layout(("w", "b"), ((8, 4), (8,)), (True, False))
    server = Server(PruneRound2(), layout, torch.randn(layout.numel))
    server.start_round(1)
    state = receive_downlink(server.downlink(-1, 0)[0].data, ClientState(), layout).state
    server.finish_round([])
    server.start_round(2)
    first = server.downlink(state.version, 0)[0]  # prune instruction
    state = receive_downlink(first.data, state, layout).state
    server.discard_replies()  # the attempt failed; the round is retried
    again, _ = server.downlink(state.version, 0)
    assert again.mask_nbytes == 0  # no bootstrap: it already holds the new mask
    got = receive_downlink(again.data, state, layout)
    assert got.state.mask.same_as(server.model.mask)
    assert torch.equal(got.values, server.model.values)


def test_norm_screen_never_refuses_moves_that_are_tiny_against_the_model():
    """Near convergence most clients barely move; one that still learns is not an outlier."""
    layout = Layout(("w",), ((100,),), (True,))
    start = torch.full((layout.numel,), 1.0)  # model norm 10
    server = Server(DenseFedAvg(), layout, start, norm_threshold=10.0)
    server.start_round(1)
    replies = []
    for client, step in enumerate([1e-4, 1e-4, 1e-4, 1e-4, 5e-3]):  # last: 50x the median
        state = receive_downlink(server.downlink(-1, client)[0].data, ClientState(), layout).state
        values = start + step * torch.ones(layout.numel)  # distance 10 * step <= 0.05
        replies.append((client, server.read_reply(reply(layout, state, values), client)))
    assert server.screen(replies).rejected == []
    far = start + 1.5 * torch.ones(layout.numel)  # distance 15 > 10 x (1 % of 10)
    state = receive_downlink(server.downlink(-1, 9)[0].data, ClientState(), layout).state
    replies.append((9, server.read_reply(reply(layout, state, far), 9)))
    assert [c for c, _ in server.screen(replies).rejected] == [9]


def test_replies_outside_a_round_are_refused_not_crashed():
    layout, server, state = setup()
    data = reply(layout, state, torch.ones(layout.numel))
    server.finish_round([])
    with pytest.raises(UpdateRejected, match="no round in progress"):
        server.read_reply(data, 0)


def test_an_inflated_sample_count_is_capped_so_it_cannot_buy_the_mean():
    layout = Layout(("w",), ((10,),), (True,))
    server = Server(DenseFedAvg(), layout, torch.zeros(layout.numel), norm_threshold=10.0)
    server.start_round(1)
    replies = []
    for client, (samples, value) in enumerate([(50, 1.0), (60, 1.0), (40, 1.0), (2**32 - 1, 2.0)]):
        state = receive_downlink(server.downlink(-1, client)[0].data, ClientState(), layout).state
        data = reply(layout, state, torch.full((10,), value), num_samples=samples)
        replies.append((client, server.read_reply(data, client)))
    screening = server.screen(replies)
    assert screening.rejected == [] and [c for c, _ in screening.capped] == [3]
    assert "capped to 550" in screening.capped[0][1]  # 10 x the median 55
    server.finish_round([m for _, m in screening.accepted])
    assert torch.allclose(server.model.values, torch.full((10,), (150 + 2 * 550) / 700))


def test_after_a_reset_a_retried_client_holding_the_new_model_is_not_bootstrapped_twice():
    from fedmap.methods.base import Method, Step

    layout = Layout(("w", "b"), ((8, 4), (8,)), (True, False))

    class ResetRound2(Method):  # what a rewind or a guard revert does
        def plan(self, round, model):
            if round != 2:
                return Step()
            mask = Mask.from_prunable_bits(layout, torch.arange(32) % 2 == 0)
            return Step(mask=mask, reset_values=torch.ones(layout.numel))

    server = Server(ResetRound2(), layout, torch.randn(layout.numel))
    server.start_round(1)
    state = receive_downlink(server.downlink(-1, 0)[0].data, ClientState(), layout).state
    server.finish_round([])
    server.start_round(2)
    first, _ = server.downlink(state.version, 0)
    assert first.mask_nbytes > 0  # everyone needs the reset model's mask once
    state = receive_downlink(first.data, state, layout).state
    server.discard_replies()
    again, _ = server.downlink(state.version, 0)
    assert again.mask_nbytes == 0
    assert torch.equal(receive_downlink(again.data, state, layout).values, server.model.values)


class OwnMasks(DenseFedAvg):
    """Clients send their own masks (as client-local pruning does) and PruneFL's statistics."""

    density = 0.5

    def client_task(self, round):
        from fedmap.methods.base import ClientTask

        return ClientTask(prune_to=self.density, importance=True)


def own_mask_setup():
    layout = Layout(("w", "b"), ((8, 4), (8,)), (True, False))
    server = Server(OwnMasks(), layout, torch.randn(layout.numel))
    server.start_round(1)
    states = []
    for client in (0, 1):
        encoded, _ = server.downlink(-1, client=client)
        states.append(receive_downlink(encoded.data, ClientState(), layout).state)
    return layout, server, states


def test_replies_with_own_masks_are_averaged_over_the_clients_that_kept_each_weight():
    layout, server, states = own_mask_setup()
    keep_a = torch.ones(layout.numel, dtype=torch.bool)
    keep_a[:16] = False  # client 0 pruned the first 16 weights
    keep_b = torch.ones(layout.numel, dtype=torch.bool)
    keep_b[16:32] = False  # client 1 the next 16
    a, b = Mask(layout, keep_a), Mask(layout, keep_b)
    msgs = [
        server.read_reply(reply(layout, states[0], torch.full((a.num_kept,), 1.0), own_mask=a), 0),
        server.read_reply(
            reply(layout, states[1], torch.full((b.num_kept,), 4.0), own_mask=b, num_samples=15), 1
        ),
    ]
    server.finish_round(msgs)
    values = server.model.values
    assert torch.all(values[:16] == 4.0) and torch.all(values[16:32] == 1.0)  # one client each
    assert torch.allclose(values[32:], torch.full((8,), (5 * 1.0 + 15 * 4.0) / 20))  # both
    assert server.model.mask.density == 1.0 and server.model.version == 0  # the union is dense
    # a coordinate nobody kept is pruned from the global model, and the mask version moves on
    server.method.density = 0.0
    server.start_round(2)
    states = [
        receive_downlink(server.downlink(0, client=c)[0].data, states[c], layout).state
        for c in (0, 1)
    ]
    both = Mask(layout, keep_a & keep_b | ~layout.prunable_flat)
    accepted = [
        server.read_reply(
            reply(layout, states[c], torch.ones(both.num_kept), round=2, own_mask=both), c
        )
        for c in (0, 1)
    ]
    server.finish_round(accepted)
    assert server.model.version == 1 and server.model.mask.same_as(both)


def test_a_mask_in_a_reply_is_refused_when_the_method_sends_none():
    layout, server, state = setup()
    own = Mask.dense(layout)
    with pytest.raises(UpdateRejected, match="carries a mask"):
        server.read_reply(reply(layout, state, torch.ones(layout.numel), own_mask=own), 0)


def test_an_own_mask_that_breaks_the_rounds_task_is_refused():
    layout, server, states = own_mask_setup()
    dense = Mask.dense(layout)  # keeps everything: would make the union dense
    with pytest.raises(UpdateRejected, match="keeps 32 weights, the round asks 16"):
        server.read_reply(reply(layout, states[0], torch.ones(layout.numel), own_mask=dense), 0)


def test_statistics_are_validated_and_only_accepted_with_an_accepted_reply():
    from fedmap.protocol.client import encode_statistics

    layout, server, states = own_mask_setup()
    good = encode_statistics(
        torch.ones(layout.num_prunable), states[0], round=1, num_samples=5, layout=layout
    ).data
    with pytest.raises(UpdateRejected, match="without an accepted reply"):
        server.read_statistics(good, 0)
    keep = torch.ones(layout.numel, dtype=torch.bool)
    keep[:16] = False
    own = Mask(layout, keep)
    server.read_reply(reply(layout, states[0], torch.ones(own.num_kept), own_mask=own), 0)
    negative = encode_statistics(
        -torch.ones(layout.num_prunable), states[0], round=1, num_samples=5, layout=layout
    ).data
    with pytest.raises(UpdateRejected, match="negative"):
        server.read_statistics(negative, 0)
    server.read_statistics(good, 0)
    with pytest.raises(UpdateRejected, match="without an accepted reply"):
        server.read_statistics(good, 0)  # once per client
    plain_layout, plain, plain_state = setup()
    with pytest.raises(UpdateRejected, match="did not ask"):
        plain.read_statistics(good, 0)


def test_statistics_are_weighted_by_the_accepted_replies_not_their_own_claim():
    from fedmap.protocol.client import encode_statistics

    seen = []

    class Recorder(OwnMasks):
        def observe_statistics(self, round, importance):
            seen.append(importance)

    layout = Layout(("w", "b"), ((8, 4), (8,)), (True, False))
    server = Server(Recorder(), layout, torch.randn(layout.numel))
    server.start_round(1)
    keep = torch.ones(layout.numel, dtype=torch.bool)
    keep[:16] = False
    own = Mask(layout, keep)
    replies = []
    for client, samples, claim, score in ((0, 1, 1000, 0.0), (1, 3, 1, 4.0)):
        encoded, _ = server.downlink(-1, client=client)
        state = receive_downlink(encoded.data, ClientState(), layout).state
        data = reply(layout, state, torch.ones(own.num_kept), own_mask=own, num_samples=samples)
        replies.append(server.read_reply(data, client))
        stats = torch.full((layout.num_prunable,), score)
        server.read_statistics(
            encode_statistics(stats, state, round=1, num_samples=claim, layout=layout).data, client
        )
    server.finish_round(replies)
    assert torch.allclose(seen[0], torch.full((layout.num_prunable,), 3.0))  # (0*1 + 4*3) / 4
