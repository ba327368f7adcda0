"""Wire format: a fixed 50-byte header, an optional coded mask, then packed values.

::

    offset size field
         0    4 magic "FMAP"
         4    1 version (1)
         5    1 kind (1 downlink, 2 uplink, 3 statistics: per-prunable-weight scores)
         6    1 value dtype (0 float32, 1 float16, 2 bfloat16)
         7    1 flags (1 prune instruction, 2 bootstrap: a mask follows)
         8    4 layout fingerprint (CRC32 of names, shapes, prunability)
        12    4 round
        16    4 mask version the values are packed with (counts mask changes)
        20    4 number of values
        24    8 prune rate (float64; 0 unless flag 1)
        32    1 prune scope and ranking (0 global magnitude, 1 layer magnitude,
                2 global random, 3 layer random)
        33    1 mask coding (0 bitmap, 1 Elias-Fano)
        34    4 mask bytes
        38    4 number of training samples (uplink)
        42    4 mean training loss (float32, uplink)
        46    4 CRC32 of every other byte of the message
        50      mask bytes, then values, little-endian

All integers are little-endian. The decoder checks every length against the header
and the CRC, so truncated, oversized or garbled bytes raise :class:`CodecError`.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from fedmap.core.maskcode import decode_mask_bits, encode_mask_bits
from fedmap.core.prune import Ranking, Scope
from fedmap.errors import CodecError

MAGIC = b"FMAP"
VERSION = 1
DOWNLINK, UPLINK, STATISTICS = 1, 2, 3
FLAG_PRUNE, FLAG_BOOTSTRAP = 1, 2
_HEADER = struct.Struct("<4sBBBBIIIIdBBIIfI")
HEADER_NBYTES = _HEADER.size  # 50
_CRC_OFFSET = HEADER_NBYTES - 4

DType = Literal["float32", "float16", "bfloat16"]
_DTYPES: dict[str, tuple[int, torch.dtype]] = {
    "float32": (0, torch.float32),
    "float16": (1, torch.float16),
    "bfloat16": (2, torch.bfloat16),
}
DTYPE_NAMES: tuple[str, ...] = tuple(_DTYPES)
# (scope, ranking) of a prune instruction -> its header byte; 0-2 predate the ranking setting
# (2 was "random"), so old and new parties agree on every instruction both can express.
_PRUNE_CODES: dict[tuple[Scope, Ranking], int] = {
    ("global", "magnitude"): 0,
    ("layer", "magnitude"): 1,
    ("global", "random"): 2,
    ("layer", "random"): 3,
}
_PRUNE_KINDS = {code: kind for kind, code in _PRUNE_CODES.items()}


def itemsize(dtype: str) -> int:
    """Bytes per value on the wire."""
    return torch.empty(0, dtype=_torch_dtype(dtype)).element_size()


def quantize(values: torch.Tensor, dtype: str) -> torch.Tensor:
    """The float32 values a receiver decodes after sending ``values`` as ``dtype``.

    The server keeps its global model in exactly this form, so what every client
    decodes equals the server's model and all parties rank the same numbers.
    """
    return values.to(_torch_dtype(dtype)).to(torch.float32)


@dataclass(frozen=True)
class PruneInstruction:
    """Tells an in-step client to prune ``rate`` of its remaining weights after unpacking."""

    rate: float
    scope: Scope = "global"  # "global": one ranking across tensors; "layer": per tensor
    ranking: Ranking = "magnitude"  # "magnitude": smallest |w| first; "random": seeded scores


@dataclass(frozen=True)
class Message:
    """One decoded message; ``values`` are float32 (num_values,) in canonical kept order."""

    kind: int
    round: int
    mask_version: int
    values: torch.Tensor
    dtype: str = "float32"
    prune: PruneInstruction | None = None
    mask_bits: np.ndarray | None = None  # bool over prunable coordinates (bootstrap, own mask)
    num_samples: int = 0
    train_loss: float = 0.0


@dataclass(frozen=True)
class Encoded:
    """Bytes of one message and how they split, for the ledger (sizes add up to len(data))."""

    data: bytes
    mask_nbytes: int
    values_nbytes: int

    @property
    def header_nbytes(self) -> int:
        """Header bytes (always :data:`HEADER_NBYTES`)."""
        return len(self.data) - self.mask_nbytes - self.values_nbytes


def encode(message: Message, fingerprint: int) -> Encoded:
    """Serialise ``message`` for a model whose layout has ``fingerprint``."""
    code, _ = _DTYPES[_check_dtype(message.dtype)]
    values = _values_to_bytes(message.values, message.dtype)
    flags, rate, scope = 0, 0.0, 0
    if message.prune is not None:
        flags |= FLAG_PRUNE
        rate = message.prune.rate
        scope = _PRUNE_CODES[(message.prune.scope, message.prune.ranking)]
    coding, mask = 0, b""
    if message.mask_bits is not None:
        flags |= FLAG_BOOTSTRAP
        coding, mask = encode_mask_bits(message.mask_bits)
    header = _HEADER.pack(
        MAGIC,
        VERSION,
        message.kind,
        code,
        flags,
        fingerprint,
        message.round,
        message.mask_version,
        message.values.numel(),
        rate,
        scope,
        coding,
        len(mask),
        message.num_samples,
        message.train_loss,
        0,
    )
    body = mask + values
    crc = zlib.crc32(body, zlib.crc32(header[:_CRC_OFFSET]))
    data = header[:_CRC_OFFSET] + struct.pack("<I", crc) + body
    return Encoded(data=data, mask_nbytes=len(mask), values_nbytes=len(values))


def measure(data: bytes) -> Encoded:
    """How a received message's bytes split into header, mask and values (for the ledger).

    Reads the header only; :func:`decode` still has to validate the message.
    """
    if len(data) < HEADER_NBYTES:
        raise CodecError(f"message of {len(data)} bytes is shorter than the header")
    fields = _HEADER.unpack_from(data)
    code, count, mask_nbytes = fields[3], fields[8], fields[12]
    values_nbytes = count * itemsize(_dtype_name(code))
    if HEADER_NBYTES + mask_nbytes + values_nbytes != len(data):
        raise CodecError(f"message of {len(data)} bytes does not match its header")
    return Encoded(bytes(data), mask_nbytes, values_nbytes)


def decode(data: bytes, fingerprint: int, num_prunable: int) -> Message:
    """Parse and check one message; every malformation raises :class:`CodecError`."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CodecError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < HEADER_NBYTES:
        raise CodecError(
            f"message of {len(data)} bytes is shorter than the {HEADER_NBYTES}-byte header"
        )
    (
        magic,
        version,
        kind,
        code,
        flags,
        layout_fp,
        round,
        mask_version,
        count,
        rate,
        scope,
        coding,
        mask_nbytes,
        num_samples,
        train_loss,
        crc,
    ) = _HEADER.unpack_from(data)
    if magic != MAGIC or version != VERSION:
        raise CodecError(f"not a fedmap v{VERSION} message (magic {magic!r}, version {version})")
    if zlib.crc32(data[HEADER_NBYTES:], zlib.crc32(data[:_CRC_OFFSET])) != crc:
        raise CodecError("checksum mismatch: the message was corrupted")
    dtype = _dtype_name(code)
    bad_flags = flags & ~(FLAG_PRUNE | FLAG_BOOTSTRAP)
    if kind not in (DOWNLINK, UPLINK, STATISTICS) or bad_flags or scope not in _PRUNE_KINDS:
        raise CodecError(f"bad header fields: kind={kind} flags={flags} scope={scope}")
    if layout_fp != fingerprint:
        raise CodecError(
            f"message is for model layout {layout_fp:#010x}, this model is {fingerprint:#010x}"
        )
    expected = HEADER_NBYTES + mask_nbytes + count * itemsize(dtype)
    if len(data) != expected:
        raise CodecError(f"message should be {expected} bytes by its header, got {len(data)}")
    mask_bits = None
    if flags & FLAG_BOOTSTRAP:
        mask_bits = decode_mask_bits(
            coding, data[HEADER_NBYTES : HEADER_NBYTES + mask_nbytes], num_prunable
        )
    elif mask_nbytes:
        raise CodecError("mask bytes present without the bootstrap flag")
    prune = PruneInstruction(rate, *_PRUNE_KINDS[scope]) if flags & FLAG_PRUNE else None
    if prune is not None and not 0.0 < rate < 1.0:
        raise CodecError(f"prune rate must be in (0, 1), got {rate}")
    values = _values_from_bytes(data[HEADER_NBYTES + mask_nbytes :], dtype)
    return Message(
        kind, round, mask_version, values, dtype, prune, mask_bits, num_samples, train_loss
    )


def _values_to_bytes(values: torch.Tensor, dtype: str) -> bytes:
    cast = values.detach().to("cpu").to(_torch_dtype(dtype)).contiguous()
    if dtype == "bfloat16":  # numpy has no bfloat16: ship the raw 16-bit patterns
        cast = cast.view(torch.int16)
    return cast.numpy().astype(cast.numpy().dtype.newbyteorder("<"), copy=False).tobytes()


def _values_from_bytes(payload: bytes, dtype: str) -> torch.Tensor:
    np_dtype = {"float32": "<f4", "float16": "<f2", "bfloat16": "<i2"}[dtype]
    array = torch.from_numpy(np.frombuffer(payload, dtype=np_dtype).astype(np_dtype[1:]))
    if dtype == "bfloat16":
        array = array.view(torch.bfloat16)
    return array.to(torch.float32)


def _check_dtype(dtype: str) -> str:
    if dtype not in _DTYPES:
        raise ValueError(f"transport.dtype: expected one of {DTYPE_NAMES}, got {dtype!r}")
    return dtype


def _torch_dtype(dtype: str) -> torch.dtype:
    return _DTYPES[_check_dtype(dtype)][1]


def _dtype_name(code: int) -> str:
    for name, (value, _) in _DTYPES.items():
        if value == code:
            return name
    raise CodecError(f"unknown value dtype code {code}")
