import pytest
import torch

from fedmap.core.codec import PruneInstruction, quantize
from fedmap.core.layout import Layout
from fedmap.core.prune import compute_mask
from fedmap.errors import ProtocolError
from fedmap.methods.base import GlobalModel, Method, Step
from fedmap.methods.dense import DenseFedAvg
from fedmap.protocol.client import ClientState, encode_reply, receive_downlink
from fedmap.protocol.server import Server


class PruneEveryRound(Method):
    def __init__(self, rate: float, scope: str = "global") -> None:
        self.rate, self.scope = rate, scope

    def plan(self, round: int, model: GlobalModel) -> Step:
        if round == 1:
            return Step()
        return Step(
            prune=PruneInstruction(self.rate, self.scope),
            mask=compute_mask(model.values, model.mask, self.rate, self.scope),
        )


def make_layout() -> Layout:
    return Layout(("w1", "b1", "w2"), ((30, 20), (30,), (10, 30)), (True, False, True))


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("scope", ["global", "layer"])
def test_server_and_clients_agree_on_masks_for_every_dtype(dtype, scope):
    layout = make_layout()
    gen = torch.Generator().manual_seed(0)
    init = torch.randn(layout.numel, generator=gen)
    server = Server(PruneEveryRound(0.3, scope), layout, init, dtype=dtype)
    clients = {i: ClientState() for i in range(3)}
    for rnd in range(1, 6):
        server.start_round(rnd)
        for cid in clients:
            encoded, _ = server.downlink(clients[cid].version, cid)
            got = receive_downlink(encoded.data, clients[cid], layout)
            clients[cid] = got.state
            assert got.state.mask.same_as(server.model.mask)
            assert torch.equal(got.values, server.model.values)
            assert got.state.version == server.model.version
        # everyone replies with noise so values keep changing; ties broken identically
        replies = []
        for cid in clients:
            noisy = server.model.values + 0.01 * torch.randn(layout.numel, generator=gen)
            packed = noisy[server.model.mask.flat]
            data = encode_reply(
                packed,
                clients[cid],
                round=rnd,
                num_samples=cid + 1,
                train_loss=0.1,
                dtype=dtype,
                layout=layout,
            ).data
            replies.append(server.read_reply(data, cid))
        server.finish_round(replies)
        assert torch.equal(server.model.values, quantize(server.model.values, dtype))
    assert server.model.mask.density == pytest.approx(0.7**4, abs=0.01)


def test_in_step_clients_receive_no_mask_bytes_and_stale_ones_get_a_bootstrap():
    layout = make_layout()
    server = Server(PruneEveryRound(0.5), layout, torch.randn(layout.numel))
    server.start_round(1)
    encoded, _ = server.downlink(ClientState().version)  # new client: bootstrap
    assert encoded.mask_nbytes > 0
    state = receive_downlink(encoded.data, ClientState(), layout).state
    server.finish_round([])
    server.start_round(2)  # prune round
    in_step, _ = server.downlink(state.version)
    assert in_step.mask_nbytes == 0
    stale, _ = server.downlink(ClientState().version)
    assert stale.mask_nbytes > 0
    assert receive_downlink(stale.data, ClientState(), layout).state.mask.same_as(server.model.mask)


def test_values_without_mask_for_a_stale_client_are_a_protocol_error():
    layout = make_layout()
    server = Server(DenseFedAvg(), layout, torch.randn(layout.numel))
    server.start_round(1)
    in_step, _ = server.downlink(0)
    with pytest.raises(ProtocolError, match="no mask was sent"):
        receive_downlink(in_step.data, ClientState(), layout)
