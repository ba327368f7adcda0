"""Hostile bytes: >= 10,000 random and mutated messages against the decoder and the server.

Every message either decodes/validates or raises the documented error
(:class:`CodecError` from the decoder, :class:`UpdateRejected` from the server);
nothing else escapes; whatever the server accepts is indistinguishable from an
honest reply; and an intruder's forgeries leave the global model bit-identical.
Mutations recompute the CRC where asked, so they reach the checks behind it.
"""

from __future__ import annotations

import math
import struct
import zlib

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

from fedmap.core import codec
from fedmap.core.codec import HEADER_NBYTES, UPLINK, Message, PruneInstruction, decode, encode
from fedmap.core.layout import Layout
from fedmap.core.prune import compute_mask
from fedmap.errors import CodecError, UpdateRejected
from fedmap.methods.base import Method, Step
from fedmap.protocol.client import ClientState, encode_reply, receive_downlink
from fedmap.protocol.server import Server
from fedmap.runs.experiment import build_loop, prepare
from fedmap.runs.session import run as run_experiment

LAYOUT = Layout(("w", "b"), ((12, 10), (10,)), (True, False))
FIELDS = codec._HEADER  # the wire header, field by field
FIELD_KINDS = [c for c in FIELDS.format.lstrip("<") if not c.isdigit()]  # one letter per field
EXAMPLES = 5_000  # per hypothesis test; two tests plus the simulated intruder: > 10,000


class PruneAtRound2(Method):
    def plan(self, round, model):
        if round != 2:
            return Step()
        return Step(prune=PruneInstruction(0.5), mask=compute_mask(model.values, model.mask, 0.5))


def pruned_server() -> tuple[Server, ClientState]:
    """A server in round 2 whose mask keeps half the weights, and one in-step client 0."""
    server = Server(PruneAtRound2(), LAYOUT, torch.randn(LAYOUT.numel, generator=gen(0)))
    server.start_round(1)
    state = receive_downlink(server.downlink(-1, 0)[0].data, ClientState(), LAYOUT).state
    server.finish_round([])
    server.start_round(2)
    state = receive_downlink(server.downlink(state.version, 0)[0].data, state, LAYOUT).state
    return server, state


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


SERVER, STATE = pruned_server()
VALID = encode_reply(
    SERVER.model.values[SERVER.model.mask.flat] + 0.01,
    STATE,
    round=2,
    num_samples=7,
    train_loss=0.3,
    dtype="float32",
    layout=LAYOUT,
).data


def fix_crc(data: bytes) -> bytes:
    if len(data) < HEADER_NBYTES:
        return data
    crc = zlib.crc32(data[HEADER_NBYTES:], zlib.crc32(data[: HEADER_NBYTES - 4]))
    return data[: HEADER_NBYTES - 4] + struct.pack("<I", crc) + data[HEADER_NBYTES:]


def set_field(data: bytes, index: int, raw: int) -> bytes:
    """Overwrite header field ``index`` with bits from ``raw`` (any width), keep the rest."""
    fields = list(FIELDS.unpack_from(data))
    kind = FIELD_KINDS[index]
    if kind == "s":
        fields[index] = raw.to_bytes(16, "little")[:4]
    elif kind in "BI":
        fields[index] = raw % (256 if kind == "B" else 2**32)
    else:  # d, f: any bit pattern, NaN and Inf included
        width = 8 if kind == "d" else 4
        value = struct.unpack("<d" if width == 8 else "<f", raw.to_bytes(16, "little")[:width])[0]
        fields[index] = value
    return FIELDS.pack(*fields) + data[HEADER_NBYTES:]


def mutate(data: bytes, op: int, a: int, b: int, extra: bytes, crc: bool) -> bytes:
    """One of several corruptions of ``data``, chosen by ``op``."""
    n = len(data)
    if op == 0:  # flip one bit
        i = a % n
        data = data[:i] + bytes([data[i] ^ (1 << (b % 8))]) + data[i + 1 :]
    elif op == 1:  # truncate
        data = data[: a % n]
    elif op == 2:  # append
        data = data + extra
    elif op == 3:  # overwrite a stretch
        i = a % n
        data = data[:i] + extra + data[i + len(extra) :]
    elif op == 4:  # rewrite one header field
        data = set_field(data, a % 16, b)
    elif op == 5:  # values only: poke a NaN/Inf/huge value into the payload
        i = HEADER_NBYTES + 4 * (a % ((n - HEADER_NBYTES) // 4))
        value = [math.nan, math.inf, -math.inf, 3e38, 0.0][b % 5]
        data = data[:i] + struct.pack("<f", value) + data[i + 4 :]
    return fix_crc(data) if crc else data


mutations = st.builds(
    mutate,
    st.just(VALID),
    st.integers(0, 5),
    st.integers(0, 2**40),
    st.integers(0, 2**64 - 1),
    st.binary(max_size=64),
    st.booleans(),
)
structured = st.builds(
    lambda kind, rnd, epoch, count, dtype, samples, loss, fp, bits, rate: (
        encode(
            Message(
                kind,
                rnd,
                epoch,
                torch.tensor(
                    np.random.default_rng(count).standard_normal(count), dtype=torch.float32
                ),
                dtype,
                PruneInstruction(rate) if rate is not None else None,
                np.array(bits, dtype=bool) if bits else None,
                samples,
                loss,
            ),
            fp,
        ).data
    ),
    st.sampled_from([1, 2]),
    st.integers(0, 5),
    st.integers(0, 3),
    st.integers(0, 130),
    st.sampled_from(["float32", "float16", "bfloat16"]),
    st.integers(0, 2**32 - 1),
    st.floats(width=32, allow_nan=True, allow_infinity=True),
    st.sampled_from([LAYOUT.fingerprint, LAYOUT.fingerprint ^ 1]),
    st.lists(st.booleans(), max_size=130),
    st.one_of(st.none(), st.floats(0.01, 0.99)),
)
hostile = st.one_of(st.binary(max_size=700), mutations, mutations, structured)
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@FUZZ
@given(hostile)
def test_decoder_returns_a_message_or_raises_codec_error(data):
    try:
        message = decode(data, LAYOUT.fingerprint, LAYOUT.num_prunable)
    except CodecError:
        return
    assert message.kind in (1, 2, 3) and message.dtype in ("float32", "float16", "bfloat16")
    assert message.values.dtype == torch.float32
    if message.mask_bits is not None:
        assert message.mask_bits.shape == (LAYOUT.num_prunable,)


@FUZZ
@given(hostile)
def test_server_accepts_only_replies_indistinguishable_from_honest_ones(data):
    SERVER.discard_replies()
    SERVER.expect(0)  # each example is client 0's first reply of the round
    try:
        message = SERVER.read_reply(data, 0)
    except UpdateRejected:
        return
    assert message.kind == UPLINK and message.round == 2
    assert message.mask_version == SERVER.model.version and message.dtype == "float32"
    assert message.values.numel() == SERVER.model.mask.num_kept
    assert message.prune is None and message.mask_bits is None
    assert bool(torch.isfinite(message.values).all()) and math.isfinite(message.train_loss)
    assert message.num_samples > 0


def test_the_valid_reply_really_is_accepted():
    SERVER.discard_replies()
    SERVER.expect(0)
    assert SERVER.read_reply(VALID, 0).num_samples == 7


def test_intruder_messages_are_all_refused_and_the_model_is_bit_identical(tmp_path, tiny_config):
    """A party outside the cohort floods every round with mutated copies of real replies."""
    rng = np.random.default_rng(0)
    sent = []

    def intruder(rnd: int, honest: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
        out = []
        for _ in range(200):
            client, data = honest[int(rng.integers(len(honest)))]
            forged = mutate(
                data,
                int(rng.integers(6)),
                int(rng.integers(2**40)),
                int(rng.integers(2**62)),
                rng.bytes(int(rng.integers(1, 64))),
                bool(rng.integers(2)),
            )
            # a replay under the honest sender's id, or a node that was never sent anything
            out.append((client if rng.random() < 0.5 else 1000 + int(rng.integers(50)), forged))
        sent.extend(out)
        return out

    config = tiny_config(rounds=5)
    (tmp_path / "clean").mkdir()
    (tmp_path / "attacked").mkdir()
    run_experiment(prepare(config), tmp_path / "clean")
    experiment = prepare(config)
    loop = build_loop(experiment, intruder=intruder)
    run_experiment(experiment, tmp_path / "attacked", loop=loop)
    rows = [
        __import__("json").loads(line)
        for line in (tmp_path / "attacked" / "metrics.jsonl").read_text().splitlines()
    ]
    assert len(sent) == 1000 and sum(r["rejected"] for r in rows) == 1000
    lines = (tmp_path / "attacked" / "events.jsonl").read_text().splitlines()
    reasons = [__import__("json").loads(line)["reason"] for line in lines]
    assert len(reasons) == 1000
    # content is checked before identity, so the forgeries exercised the whole chain
    for kind in ("undecodable", "reply mask version", "second reply", "unknown client"):
        assert any(kind in r for r in reasons), kind
    clean = load_file(tmp_path / "clean" / "model.safetensors")
    attacked = load_file(tmp_path / "attacked" / "model.safetensors")
    assert clean.keys() == attacked.keys()
    assert all(torch.equal(clean[k], attacked[k]) for k in clean)  # bit for bit


@pytest.mark.parametrize(
    "data",
    [b"", b"FMAP", VALID[:HEADER_NBYTES], VALID[:-1], VALID + b"\0", b"\xff" * 4096],
)
def test_classic_malformations_raise_codec_error(data):
    with pytest.raises(CodecError):
        decode(data, LAYOUT.fingerprint, LAYOUT.num_prunable)


@pytest.mark.parametrize("version", [0, 2], ids=["stale", "future"])
def test_stale_and_future_mask_versions_are_refused(version):
    SERVER.discard_replies()
    SERVER.expect(0)
    values = torch.zeros(SERVER.model.mask.num_kept)
    data = encode(Message(UPLINK, 2, version, values, num_samples=3), LAYOUT.fingerprint).data
    assert SERVER.model.version == 1  # the mask after one step; 0 is stale, 2 from the future
    with pytest.raises(UpdateRejected, match=f"reply mask version is {version}, expected 1"):
        SERVER.read_reply(data, 0)
