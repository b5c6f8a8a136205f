"""Bit packing of signed integer codes: int4 two per byte, int5 eight per five bytes, int6 four per three bytes.

A `bits`-bit code q in [-2^(bits-1), 2^(bits-1)-1] is stored unsigned as u = q + 2^(bits-1). Codes are grouped so a
group fills whole bytes (g = 8 / gcd(8, bits) codes in g*bits/8 bytes), each group is a little-endian bit string with
the first code in the lowest bits. The tail is zero-padded to a whole group; `unpack_ints` takes the count back.
"""

from __future__ import annotations

import math

import numpy as np

from trainer.errors import PgolfError

PACK_MIN_BITS = 2
PACK_MAX_BITS = 8


def _pack_group(bits: int):
    if not isinstance(bits, int) or not PACK_MIN_BITS <= bits <= PACK_MAX_BITS:
        raise PgolfError(f"bit packing: expected bits in {PACK_MIN_BITS}..{PACK_MAX_BITS}, got {bits!r}")
    g = 8 // math.gcd(8, bits)
    return g, g * bits // 8


def packed_size(n: int, bits: int) -> int:
    """Bytes that `n` codes of `bits` bits occupy once packed."""
    g, nbytes = _pack_group(bits)
    return -(-n // g) * nbytes


def pack_ints(values, bits: int) -> bytes:
    """Pack signed integer codes (any integer array; flattened) into bytes, `bits` bits each."""
    g, nbytes = _pack_group(bits)
    v = np.asarray(values).reshape(-1)
    if v.size and not np.issubdtype(v.dtype, np.integer):
        raise PgolfError(f"pack_ints: expected integer codes, got dtype {v.dtype}")
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    if v.size and (v.min() < lo or v.max() > hi):
        raise PgolfError(f"pack_ints: codes must lie in [{lo}, {hi}] for int{bits}, got [{v.min()}, {v.max()}]")
    if bits == 8:
        return v.astype(np.int8).tobytes()
    u = (v.astype(np.int64) + (1 << (bits - 1))).astype(np.uint64)
    ngroups = -(-u.size // g)
    padded = np.zeros(ngroups * g, dtype=np.uint64)
    padded[:u.size] = u
    groups = padded.reshape(ngroups, g)
    # g*bits <= 56 bits for every supported width, so one uint64 holds a group.
    word = np.zeros(ngroups, dtype=np.uint64)
    for i in range(g):
        word |= groups[:, i] << np.uint64(i * bits)
    out = np.empty((ngroups, nbytes), dtype=np.uint8)
    for b in range(nbytes):
        out[:, b] = ((word >> np.uint64(8 * b)) & np.uint64(0xFF)).astype(np.uint8)
    return out.tobytes()


def unpack_ints(data: bytes, bits: int, n: int) -> np.ndarray:
    """Inverse of pack_ints: the first `n` signed codes as an int8 array."""
    g, nbytes = _pack_group(bits)
    need = packed_size(n, bits)
    if len(data) != need:
        raise PgolfError(f"unpack_ints: {n} int{bits} codes need {need} bytes, got {len(data)}")
    raw = np.frombuffer(data, dtype=np.uint8)
    if bits == 8:
        return raw.view(np.int8).copy()
    ngroups = need // nbytes
    by = raw.reshape(ngroups, nbytes).astype(np.uint64)
    word = np.zeros(ngroups, dtype=np.uint64)
    for b in range(nbytes):
        word |= by[:, b] << np.uint64(8 * b)
    mask = np.uint64((1 << bits) - 1)
    out = np.empty((ngroups, g), dtype=np.int16)
    for i in range(g):
        out[:, i] = ((word >> np.uint64(i * bits)) & mask).astype(np.int16)
    return (out.reshape(-1)[:n] - (1 << (bits - 1))).astype(np.int8)
