import struct
import zlib

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fedmap.core.codec import (
    DOWNLINK,
    HEADER_NBYTES,
    UPLINK,
    Message,
    PruneInstruction,
    decode,
    encode,
    quantize,
)
from fedmap.core.maskcode import (
    BITMAP,
    ELIAS_FANO,
    decode_mask_bits,
    encode_bitmap,
    encode_mask_bits,
)
from fedmap.errors import CodecError

FP = 0xDEADBEEF


def test_golden_bytes_of_a_tiny_uplink():
    message = Message(
        UPLINK,
        round=3,
        mask_version=2,
        values=torch.tensor([1.0, -2.0]),
        num_samples=7,
        train_loss=0.5,
    )
    data = encode(message, FP).data
    # magic, version, kind, dtype, flags, fingerprint, round, mask version, count, rate, scope,
    # mask bytes, samples, loss
    head = (
        b"FMAP"
        + bytes([1, 2, 0, 0])
        + struct.pack("<IIII", FP, 3, 2, 2)
        + struct.pack("<d", 0.0)
        + bytes([0, 0])
        + struct.pack("<IIf", 0, 7, 0.5)
    )
    body = struct.pack("<ff", 1.0, -2.0)
    crc = zlib.crc32(body, zlib.crc32(head))
    assert data == head + struct.pack("<I", crc) + body
    assert HEADER_NBYTES == 50 == len(head) + 4


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_round_trip_every_dtype_with_prune_and_bootstrap(dtype):
    values = torch.randn(257)
    bits = np.random.default_rng(0).random(100) < 0.3
    message = Message(DOWNLINK, 5, 4, values, dtype, PruneInstruction(0.2, "layer"), bits)
    encoded = encode(message, FP)
    assert len(encoded.data) == HEADER_NBYTES + encoded.mask_nbytes + encoded.values_nbytes
    decoded = decode(encoded.data, FP, 100)
    assert torch.equal(decoded.values, quantize(values, dtype))
    assert (decoded.mask_bits == bits).all()
    assert decoded.prune == PruneInstruction(0.2, "layer")
    assert (decoded.round, decoded.mask_version, decoded.dtype) == (5, 4, dtype)


def test_quantize_is_idempotent():
    values = torch.randn(1000)
    for dtype in ("float16", "bfloat16"):
        once = quantize(values, dtype)
        assert torch.equal(quantize(once, dtype), once)


def good_bytes() -> bytes:
    return encode(Message(UPLINK, 1, 0, torch.ones(8), num_samples=3), FP).data


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda d: d[:10], "shorter than"),
        (lambda d: d[:-1], "checksum|bytes by its header"),
        (lambda d: d + b"\0", "checksum|bytes by its header"),
        (lambda d: b"XXXX" + d[4:], "not a fedmap"),
        (lambda d: d[:60] + bytes([d[60] ^ 1]) + d[61:], "checksum"),
        (lambda d: "text", "expected bytes"),
    ],
)
def test_malformed_bytes_raise_codec_error(mutate, match):
    with pytest.raises(CodecError, match=match):
        decode(mutate(good_bytes()), FP, 0)


def test_wrong_layout_fingerprint_is_refused():
    with pytest.raises(CodecError, match="layout"):
        decode(good_bytes(), FP + 1, 0)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_only_ever_raise_codec_error(blob):
    try:
        decode(blob, FP, 16)
    except CodecError:
        pass


@settings(max_examples=100, deadline=None)
@given(n=st.integers(1, 3000), density=st.floats(0, 1), seed=st.integers(0, 1000))
def test_mask_codes_round_trip_and_pick_the_shorter(n, density, seed):
    bits = np.random.default_rng(seed).random(n) < density
    coding, payload = encode_mask_bits(bits)
    assert (decode_mask_bits(coding, payload, n) == bits).all()
    assert len(payload) <= len(encode_bitmap(bits))


def test_sparse_masks_use_elias_fano_and_beat_the_bitmap():
    bits = np.zeros(100_000, dtype=bool)
    bits[::10] = True  # density 0.1
    coding, payload = encode_mask_bits(bits)
    assert coding == ELIAS_FANO
    assert len(payload) < 0.6 * len(encode_bitmap(bits))  # ~2 + log2(10) bits per kept weight
    half = np.random.default_rng(0).random(100_000) < 0.5
    assert encode_mask_bits(half)[0] == BITMAP


def test_statistics_messages_round_trip():
    from fedmap.core.codec import STATISTICS, Message, decode, encode

    values = torch.rand(12)
    stats = decode(encode(Message(STATISTICS, 3, 1, values, num_samples=4), 7).data, 7, 12)
    assert stats.kind == STATISTICS and torch.equal(stats.values, values)


@pytest.mark.parametrize(
    ("scope", "ranking", "code"),
    [
        ("global", "magnitude", 0),
        ("layer", "magnitude", 1),
        ("global", "random", 2),
        ("layer", "random", 3),
    ],
)
def test_the_prune_byte_carries_scope_and_ranking(scope, ranking, code):
    """Codes 0-2 are what earlier releases sent (2 was the "random" scope): they still mean it."""
    from fedmap.core.codec import DOWNLINK, Message, PruneInstruction, decode, encode

    instruction = PruneInstruction(0.2, scope, ranking)
    data = encode(Message(DOWNLINK, 2, 0, torch.rand(12), prune=instruction), 7).data
    assert data[32] == code
    assert decode(data, 7, 12).prune == instruction


def test_an_unknown_prune_code_is_refused():
    from fedmap.core.codec import DOWNLINK, HEADER_NBYTES, Message, PruneInstruction, decode, encode

    message = Message(DOWNLINK, 2, 0, torch.rand(12), prune=PruneInstruction(0.2))
    data = bytearray(encode(message, 7).data)
    data[32] = 4
    crc = zlib.crc32(bytes(data[HEADER_NBYTES:]), zlib.crc32(bytes(data[: HEADER_NBYTES - 4])))
    data[HEADER_NBYTES - 4 : HEADER_NBYTES] = struct.pack("<I", crc)
    with pytest.raises(CodecError, match="scope=4"):
        decode(bytes(data), 7, 12)
