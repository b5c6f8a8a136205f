"""Bit packing: exact round trips for every width, odd lengths and extreme values; the documented layouts."""

import numpy as np
import pytest

from trainer.errors import PgolfError
from trainer.packing import pack_ints, packed_size, unpack_ints


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 7, 8])
@pytest.mark.parametrize("n", [0, 1, 2, 3, 5, 7, 8, 9, 1001])
def test_roundtrip_random_and_extremes(bits, n):
    rng = np.random.default_rng(bits * 1000 + n)
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    v = rng.integers(lo, hi + 1, size=n).astype(np.int8)
    if n >= 2:
        v[0], v[-1] = lo, hi
    blob = pack_ints(v, bits)
    assert len(blob) == packed_size(n, bits)
    back = unpack_ints(blob, bits, n)
    assert back.dtype == np.int8 and np.array_equal(back, v)


def test_layout_sizes():
    assert packed_size(2, 4) == 1 and packed_size(3, 4) == 2
    assert packed_size(4, 6) == 3 and packed_size(5, 6) == 6
    assert packed_size(8, 5) == 5 and packed_size(9, 5) == 10
    assert packed_size(10, 8) == 10


def test_int4_is_two_nibbles_low_first():
    # -8 -> 0, 7 -> 15; first code in the low nibble.
    assert pack_ints(np.array([-8, 7, 1], dtype=np.int8), 4) == bytes([0xF0, 0x09])


def test_int6_is_four_codes_in_three_bytes():
    v = np.array([-32, 31, 0, -1], dtype=np.int8)
    u = [0, 63, 32, 31]
    word = u[0] | u[1] << 6 | u[2] << 12 | u[3] << 18
    assert pack_ints(v, 6) == word.to_bytes(3, "little")


def test_all_values_of_each_width():
    for bits in (4, 5, 6):
        v = np.arange(-(1 << (bits - 1)), 1 << (bits - 1), dtype=np.int8)
        assert np.array_equal(unpack_ints(pack_ints(v, bits), bits, v.size), v)


def test_errors():
    with pytest.raises(PgolfError, match=r"\[-8, 7\]"):
        pack_ints(np.array([8]), 4)
    with pytest.raises(PgolfError, match="bits"):
        pack_ints(np.array([1]), 9)
    with pytest.raises(PgolfError, match="need 3 bytes"):
        unpack_ints(b"\x00\x00", 6, 4)
    with pytest.raises(PgolfError, match="integer"):
        pack_ints(np.array([0.5]), 4)
