"""Byte compressors for the artifact, behind a small self-describing header so `decompress` needs no arguments.

Blob layout: b"PGZ" + version(1) + method id(1) + shuffle stride (uint16 LE) + payload length (uint64 LE) + stream.
Every method is deterministic for the same input and library version:
zlib level 9, zstd level 22 (zstandard), raw LZMA2 preset 9 (no .xz container: no check/timestamp bytes), brotli 11.
Byte shuffle with stride s writes byte k of every s-byte record together (the records' BSHF trick), which helps
when values span several bytes (fp16 scales, passthrough tensors).
"""

from __future__ import annotations

import lzma
import struct
import zlib

import numpy as np

from trainer.errors import PgolfError

COMPRESS_MAGIC = b"PGZ"
COMPRESS_VERSION = 1
COMPRESS_METHODS = ("zlib", "zstd", "lzma", "brotli")
_COMPRESS_HEADER = struct.Struct("<3sBBHQ")
_LZMA_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9}]


def byte_shuffle(data: bytes, stride: int) -> bytes:
    """Transpose `data` viewed as [n // stride, stride] records; a trailing partial record is kept as is."""
    if stride <= 1 or len(data) < stride:
        return bytes(data)
    n = len(data) // stride * stride
    arr = np.frombuffer(data, dtype=np.uint8, count=n).reshape(-1, stride)
    return arr.T.tobytes() + bytes(data[n:])


def byte_unshuffle(data: bytes, stride: int) -> bytes:
    if stride <= 1 or len(data) < stride:
        return bytes(data)
    n = len(data) // stride * stride
    arr = np.frombuffer(data, dtype=np.uint8, count=n).reshape(stride, -1)
    return arr.T.tobytes() + bytes(data[n:])


def _compress_stream(data: bytes, method: str) -> bytes:
    if method == "zlib":
        return zlib.compress(data, 9)
    if method == "lzma":
        return lzma.compress(data, format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS)
    if method == "zstd":
        try:
            import zstandard
        except ImportError:
            raise PgolfError("COMPRESSOR=zstd needs the 'zstandard' package (pip install zstandard)") from None
        # write_content_size/checksum are header fields, fixed here so output never depends on defaults.
        return zstandard.ZstdCompressor(level=22, write_content_size=True, write_checksum=False).compress(data)
    if method == "brotli":
        try:
            import brotli
        except ImportError:
            raise PgolfError("COMPRESSOR=brotli needs the 'brotli' package (pip install brotli)") from None
        return brotli.compress(data, quality=11)
    raise PgolfError(f"compressor {method!r}: expected one of {', '.join(COMPRESS_METHODS)}")


def _decompress_stream(stream: bytes, method: str) -> bytes:
    if method == "zlib":
        return zlib.decompress(stream)
    if method == "lzma":
        return lzma.decompress(stream, format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS)
    try:
        if method == "zstd":
            import zstandard
            return zstandard.ZstdDecompressor().decompress(stream)
        import brotli
    except ImportError:
        raise PgolfError(f"this artifact is {method}-compressed; install the '{'zstandard' if method == 'zstd' else 'brotli'}' package") from None
    return brotli.decompress(stream)


def compress(data: bytes, method: str, shuffle: int = 0) -> bytes:
    """Compress `data` with `method` (zlib, zstd, lzma, brotli), byte-shuffled with stride `shuffle` if > 1."""
    if method not in COMPRESS_METHODS:
        raise PgolfError(f"compressor {method!r}: expected one of {', '.join(COMPRESS_METHODS)}")
    if not isinstance(shuffle, int) or not 0 <= shuffle <= 0xFFFF:
        raise PgolfError(f"BYTE_SHUFFLE: expected a stride in 0..65535, got {shuffle!r}")
    data = bytes(data)
    header = _COMPRESS_HEADER.pack(COMPRESS_MAGIC, COMPRESS_VERSION, COMPRESS_METHODS.index(method), shuffle, len(data))
    return header + _compress_stream(byte_shuffle(data, shuffle), method)


def compressed_method(blob: bytes) -> str:
    """Name of the method a blob was compressed with (reads the header only)."""
    return COMPRESS_METHODS[_read_compress_header(blob)[1]]


def _read_compress_header(blob: bytes):
    if len(blob) < _COMPRESS_HEADER.size:
        raise PgolfError(f"compressed blob: {len(blob)} bytes is shorter than the {_COMPRESS_HEADER.size}-byte header")
    magic, version, method_id, shuffle, length = _COMPRESS_HEADER.unpack_from(blob)
    if magic != COMPRESS_MAGIC:
        raise PgolfError(f"compressed blob: bad magic {magic!r}, expected {COMPRESS_MAGIC!r}")
    if version != COMPRESS_VERSION:
        raise PgolfError(f"compressed blob: format version {version}, expected {COMPRESS_VERSION}")
    if method_id >= len(COMPRESS_METHODS):
        raise PgolfError(f"compressed blob: unknown method id {method_id}")
    return version, method_id, shuffle, length


def decompress(blob: bytes) -> bytes:
    """Inverse of compress; the header says how."""
    _version, method_id, shuffle, length = _read_compress_header(blob)
    method = COMPRESS_METHODS[method_id]
    try:
        data = _decompress_stream(bytes(blob[_COMPRESS_HEADER.size:]), method)
    except PgolfError:
        raise
    except Exception as exc:  # zlib.error, lzma.LZMAError, zstd/brotli errors: corrupt or truncated stream
        raise PgolfError(f"compressed blob: {method} stream is corrupt ({type(exc).__name__}: {exc})") from None
    if len(data) != length:
        raise PgolfError(f"compressed blob: decoded {len(data)} bytes, header says {length}")
    return byte_unshuffle(data, shuffle)
