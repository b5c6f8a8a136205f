"""Compressors: round trip, determinism (also across processes), byte shuffle, header, corrupt input."""

import subprocess
import sys

import numpy as np
import pytest

from trainer.compress import COMPRESS_METHODS, byte_shuffle, byte_unshuffle, compress, compressed_method, decompress
from trainer.errors import PgolfError


def _payload(n=60000, seed=0):
    rng = np.random.default_rng(seed)
    # fp16 values of a smooth-ish distribution: low bytes noisy, high bytes repetitive (what shuffling exploits).
    return (rng.standard_normal(n // 2) * 0.02).astype(np.float16).tobytes()


@pytest.mark.parametrize("method", COMPRESS_METHODS)
@pytest.mark.parametrize("shuffle", [0, 2, 3])
def test_roundtrip_and_determinism(method, shuffle):
    data = _payload() + b"tail!"
    blob = compress(data, method, shuffle)
    assert decompress(blob) == data
    assert compress(data, method, shuffle) == blob
    assert compressed_method(blob) == method
    assert len(blob) < len(data)


@pytest.mark.parametrize("method", COMPRESS_METHODS)
def test_empty_and_tiny(method):
    for data in (b"", b"x", b"ab"):
        assert decompress(compress(data, method, 2)) == data


def test_shuffle_helps_fp16_and_inverts():
    data = _payload(200000, seed=1)
    assert byte_unshuffle(byte_shuffle(data, 2), 2) == data
    assert byte_shuffle(b"abcdefg", 2) == b"acebdf" + b"g"
    assert len(compress(data, "zlib", 2)) < len(compress(data, "zlib", 0))


def test_deterministic_across_processes():
    code = ("import sys, numpy as np; from trainer.compress import compress; "
            "d = (np.random.default_rng(5).standard_normal(20000) * 0.02).astype(np.float16).tobytes(); "
            "sys.stdout.buffer.write(b''.join(compress(d, m, 2) for m in ('zlib', 'zstd', 'lzma', 'brotli')))")
    outs = [subprocess.run([sys.executable, "-c", code], capture_output=True, check=True).stdout for _ in range(2)]
    assert outs[0] == outs[1] and len(outs[0]) > 0


def test_lzma_is_raw_lzma2_preset9():
    import lzma
    data = _payload(30000, seed=2)
    blob = compress(data, "lzma")
    ref = lzma.compress(data, format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2, "preset": 9}])
    assert blob.endswith(ref)


def test_errors():
    with pytest.raises(PgolfError, match="expected one of"):
        compress(b"x", "gzip")
    with pytest.raises(PgolfError, match="magic"):
        decompress(b"NOTAPGZBLOBATALLxxxxxxxx")
    with pytest.raises(PgolfError, match="shorter"):
        decompress(b"PG")
    blob = compress(_payload(), "zlib")
    with pytest.raises(PgolfError, match="corrupt"):
        decompress(blob[:-100])
