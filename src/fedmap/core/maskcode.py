"""Coding a mask for the rare message that must carry one (a bootstrap).

Two codes, and the encoder keeps the shorter:

* ``BITMAP``: one bit per prunable weight (``numpy.packbits``).
* ``ELIAS_FANO``: the sorted positions of the rarer symbol (kept or pruned
  weights) in Elias-Fano form, about ``2 + log2(n/m)`` bits per position. It is
  a gap code of the Golomb-Rice family, chosen because both directions are
  vectorised (no bit-serial loop), so bootstraps stay cheap for millions of weights.

Only prunable coordinates are coded: the layout says where the rest lie.
"""

from __future__ import annotations

import math
import struct

import numpy as np

from fedmap.errors import CodecError

BITMAP = 0
ELIAS_FANO = 1
MASK_CODINGS = {BITMAP: "bitmap", ELIAS_FANO: "elias_fano"}
_EF_HEADER = struct.Struct("<BII")  # which symbol is listed (0 pruned, 1 kept), count, low bits


def encode_mask_bits(bits: np.ndarray) -> tuple[int, bytes]:
    """Return ``(coding, payload)`` for a bool vector, whichever coding is shorter."""
    bitmap = encode_bitmap(bits)
    elias_fano = encode_elias_fano(bits)
    if len(elias_fano) < len(bitmap):
        return ELIAS_FANO, elias_fano
    return BITMAP, bitmap


def decode_mask_bits(coding: int, payload: bytes, num_bits: int) -> np.ndarray:
    """Inverse of :func:`encode_mask_bits`; raises :class:`CodecError` on any inconsistency."""
    if coding == BITMAP:
        return decode_bitmap(payload, num_bits)
    if coding == ELIAS_FANO:
        return decode_elias_fano(payload, num_bits)
    raise CodecError(f"unknown mask coding {coding}; expected one of {sorted(MASK_CODINGS)}")


def encode_bitmap(bits: np.ndarray) -> bytes:
    """One bit per entry, most significant bit first."""
    return np.packbits(bits.astype(np.uint8)).tobytes()


def decode_bitmap(payload: bytes, num_bits: int) -> np.ndarray:
    """Read ``num_bits`` bits written by :func:`encode_bitmap`."""
    if len(payload) != (num_bits + 7) // 8:
        need = (num_bits + 7) // 8
        raise CodecError(f"bitmap of {num_bits} bits needs {need} bytes, got {len(payload)}")
    return np.unpackbits(np.frombuffer(payload, dtype=np.uint8), count=num_bits).astype(bool)


def encode_elias_fano(bits: np.ndarray) -> bytes:
    """Elias-Fano code of the positions of the rarer symbol in ``bits``."""
    num_bits = bits.size
    kept = int(bits.sum())
    symbol = 1 if kept <= num_bits - kept else 0
    positions = np.flatnonzero(bits == bool(symbol)).astype(np.int64)  # (m,) ascending
    count = positions.size
    # floor(log2(n/m)) low bits is the classic optimum; with nothing listed, enough
    # low bits that the upper part shrinks to a single bit.
    low_bits = int(math.floor(math.log2(num_bits / count))) if count else num_bits.bit_length()
    low = positions & ((1 << low_bits) - 1)
    high = positions >> low_bits
    # Unary upper bits: element i sets bit (high_i + i) of a vector of count + max_high + 1 bits.
    upper = np.zeros(count + (num_bits >> low_bits) + 1, dtype=np.uint8)
    upper[high + np.arange(count)] = 1
    lower = ((low[:, None] >> np.arange(low_bits - 1, -1, -1)) & 1).astype(np.uint8)  # (m, L)
    return (
        _EF_HEADER.pack(symbol, count, low_bits)
        + np.packbits(lower.reshape(-1)).tobytes()
        + np.packbits(upper).tobytes()
    )


def decode_elias_fano(payload: bytes, num_bits: int) -> np.ndarray:
    """Inverse of :func:`encode_elias_fano` with every length checked."""
    if len(payload) < _EF_HEADER.size:
        raise CodecError("Elias-Fano mask is shorter than its header")
    symbol, count, low_bits = _EF_HEADER.unpack_from(payload)
    if symbol > 1 or count > num_bits or low_bits > 40:
        raise CodecError(f"Elias-Fano header out of range: symbol={symbol} count={count}")
    lower_nbytes = (count * low_bits + 7) // 8
    upper_nbits = count + (num_bits >> low_bits) + 1
    expected = _EF_HEADER.size + lower_nbytes + (upper_nbits + 7) // 8
    if len(payload) != expected:
        raise CodecError(f"Elias-Fano mask should be {expected} bytes, got {len(payload)}")
    body = np.frombuffer(payload, dtype=np.uint8, offset=_EF_HEADER.size)
    lower = np.unpackbits(body[:lower_nbytes], count=count * low_bits).reshape(count, low_bits)
    upper = np.unpackbits(body[lower_nbytes:], count=upper_nbits)
    ones = np.flatnonzero(upper)
    if ones.size != count:
        raise CodecError(f"Elias-Fano mask lists {ones.size} positions, header says {count}")
    weights = (1 << np.arange(low_bits - 1, -1, -1)).astype(np.int64)
    positions = ((ones - np.arange(count)) << low_bits) + lower.astype(np.int64) @ weights
    if count and (positions[-1] >= num_bits or np.any(np.diff(positions) <= 0)):
        raise CodecError("Elias-Fano positions are out of range or not increasing")
    bits = np.full(num_bits, not symbol, dtype=bool)
    bits[positions] = bool(symbol)
    return bits
