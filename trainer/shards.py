"""Token shard files (`fineweb_{train,val}_%06d.bin`) in the challenge's binary format.

Layout: 256 little-endian int32 header values (magic 20240520, version 1, token count, zeros: 1024 bytes),
then `count` little-endian uint16 token ids. Every check failure is one line naming the file and what was
expected vs found, so a corrupt download never surfaces as a numpy traceback.
"""

from __future__ import annotations

import glob
import os
import re

import numpy as np

from trainer.errors import PgolfError

SHARD_MAGIC = 20240520
SHARD_VERSION = 1
HEADER_INTS = 256
SHARD_HEADER_BYTES = HEADER_INTS * 4
SHARD_MAX_TOKENS = 2**31 - 1
SHARD_SPLITS = ("train", "val")


class ShardError(PgolfError):
    """A shard file that is missing, unreadable or not in the challenge format."""


def _shard_read_header(path: str) -> tuple[int, int]:
    """Validate the header and size of `path`; return (token count, file size)."""
    if not os.path.exists(path):
        raise ShardError(f"shard {path}: no such file")
    if not os.path.isfile(path):
        raise ShardError(f"shard {path}: not a regular file")
    size = os.path.getsize(path)
    if size == 0:
        raise ShardError(f"shard {path}: file is empty, expected a {SHARD_HEADER_BYTES}-byte header")
    if size < SHARD_HEADER_BYTES:
        raise ShardError(f"shard {path}: truncated header: {size} bytes, expected at least {SHARD_HEADER_BYTES}")
    try:
        with open(path, "rb") as f:
            raw = f.read(SHARD_HEADER_BYTES)
    except OSError as exc:
        raise ShardError(f"shard {path}: cannot read: {exc.strerror or exc}") from None
    header = np.frombuffer(raw, dtype="<i4")
    magic, version, count = int(header[0]), int(header[1]), int(header[2])
    if magic != SHARD_MAGIC:
        raise ShardError(f"shard {path}: bad magic {magic}, expected {SHARD_MAGIC} (not a token shard)")
    if version != SHARD_VERSION:
        raise ShardError(f"shard {path}: unsupported version {version}, expected {SHARD_VERSION}")
    if count < 0:
        raise ShardError(f"shard {path}: negative token count {count} in header")
    expected = SHARD_HEADER_BYTES + 2 * count
    if size != expected:
        kind = "truncated" if size < expected else "size mismatch"
        raise ShardError(
            f"shard {path}: {kind}: header says {count} tokens ({expected} bytes), file has {size} bytes"
        )
    return count, size


def shard_token_count(path) -> int:
    """The number of tokens in a shard, after validating its header and size (does not read the tokens)."""
    return _shard_read_header(os.fspath(path))[0]


def read_shard(path) -> np.ndarray:
    """Read a shard's tokens as a uint16 array (validates magic, version and token count against file size)."""
    path = os.fspath(path)
    count, _ = _shard_read_header(path)
    try:
        tokens = np.fromfile(path, dtype="<u2", count=count, offset=SHARD_HEADER_BYTES)
    except (OSError, ValueError) as exc:
        raise ShardError(f"shard {path}: cannot read tokens: {exc}") from None
    if tokens.size != count:
        raise ShardError(f"shard {path}: truncated: read {tokens.size} tokens, header says {count}")
    return tokens.astype(np.uint16, copy=False)


def write_bytes_atomic(path, data: bytes) -> None:
    """Write `data` to a temporary sibling, then rename it over `path`: readers never see a half-written file."""
    path = os.fspath(path)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_shard(path, tokens) -> None:
    """Write token ids (any integer array-like, each in [0, 65535]) as a shard, atomically."""
    path = os.fspath(path)
    arr = np.asarray(tokens)
    if arr.ndim != 1:
        arr = arr.reshape(-1)
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ShardError(f"shard {path}: tokens must be integers, got dtype {arr.dtype}")
    if arr.size > SHARD_MAX_TOKENS:
        raise ShardError(f"shard {path}: {arr.size} tokens, at most {SHARD_MAX_TOKENS} fit in one shard")
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) > 65535):
        raise ShardError(
            f"shard {path}: token ids must be in [0, 65535], got range [{int(arr.min())}, {int(arr.max())}]"
        )
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[0], header[1], header[2] = SHARD_MAGIC, SHARD_VERSION, arr.size
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(header.tobytes())
            f.write(arr.astype("<u2", copy=False).tobytes())
        os.replace(tmp, path)
    except OSError as exc:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise ShardError(f"shard {path}: cannot write: {exc.strerror or exc}") from None


def shard_paths(data_path, split: str) -> list:
    """Sorted paths of `fineweb_{split}_NNNNNN.bin` in the directory `data_path` (a glob pattern also works).

    Only numbered shards match, so sidecars such as `fineweb_val_bytes_000000.bin` are never taken for tokens.
    """
    if split not in SHARD_SPLITS:
        raise ShardError(f"unknown split {split!r}, expected one of {', '.join(SHARD_SPLITS)}")
    data_path = os.fspath(data_path)
    if not data_path:
        raise ShardError(f"empty data path: expected a directory holding fineweb_{split}_*.bin shards")
    if glob.has_magic(data_path):
        found = sorted(p for p in glob.glob(data_path) if os.path.isfile(p))
        if not found:
            raise ShardError(f"no shard files match {data_path}")
        return found
    if not os.path.exists(data_path):
        raise ShardError(f"data path {data_path} does not exist (expected a directory of fineweb_*.bin shards)")
    if not os.path.isdir(data_path):
        raise ShardError(f"data path {data_path} is not a directory (expected a directory of fineweb_*.bin shards)")
    pattern = re.compile(rf"fineweb_{split}_\d+\.bin")
    found = sorted(os.path.join(data_path, n) for n in os.listdir(data_path) if pattern.fullmatch(n))
    if not found:
        raise ShardError(f"no {split} shards in {data_path}: expected files named fineweb_{split}_000000.bin, ...")
    return found
