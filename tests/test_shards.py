"""Shard format: round trip, atomic writes, and one-line errors for every kind of bad file."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from trainer.errors import PgolfError
from trainer.shards import (
    HEADER_INTS,
    SHARD_MAGIC,
    SHARD_VERSION,
    ShardError,
    read_shard,
    shard_paths,
    shard_token_count,
    write_shard,
)

SHARED = Path(os.environ.get("PGOLF_SHARED_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data")


def _raw(path: Path, header_vals, payload: bytes = b"") -> Path:
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[: len(header_vals)] = header_vals
    path.write_bytes(header.tobytes() + payload)
    return path


def test_round_trip_and_layout(tmp_path):
    toks = np.array([1, 0, 65535, 300, 7], dtype=np.int64)
    p = tmp_path / "fineweb_train_000000.bin"
    write_shard(p, toks)
    raw = p.read_bytes()
    assert len(raw) == 1024 + 2 * len(toks)
    header = np.frombuffer(raw[:1024], dtype="<i4")
    assert header[0] == SHARD_MAGIC and header[1] == SHARD_VERSION and header[2] == len(toks)
    assert not header[3:].any()
    assert np.frombuffer(raw[1024:], dtype="<u2").tolist() == toks.tolist()
    got = read_shard(p)
    assert got.dtype == np.uint16 and got.tolist() == toks.tolist()
    assert shard_token_count(p) == 5
    assert [n for n in os.listdir(tmp_path)] == ["fineweb_train_000000.bin"]  # no temp file left behind


def test_empty_token_list_is_a_valid_shard(tmp_path):
    p = tmp_path / "s.bin"
    write_shard(p, [])
    assert read_shard(p).size == 0


def test_write_rejects_out_of_range_and_float(tmp_path):
    with pytest.raises(ShardError, match=r"\[0, 65535\], got range \[-1, 3\]"):
        write_shard(tmp_path / "a.bin", [3, -1])
    with pytest.raises(ShardError, match="range .*70000"):
        write_shard(tmp_path / "a.bin", [70000])
    with pytest.raises(ShardError, match="integers"):
        write_shard(tmp_path / "a.bin", [1.5])
    assert not (tmp_path / "a.bin").exists()


def test_write_is_atomic_over_existing(tmp_path):
    p = tmp_path / "s.bin"
    write_shard(p, [1, 2, 3])
    with pytest.raises(ShardError):
        write_shard(p, [1, 2, -3])
    assert read_shard(p).tolist() == [1, 2, 3]


@pytest.mark.parametrize(
    "make, pattern",
    [
        (lambda p: _raw(p, [123, 1, 2], b"\0" * 4), r"bad magic 123, expected 20240520"),
        (lambda p: _raw(p, [SHARD_MAGIC, 2, 2], b"\0" * 4), r"unsupported version 2, expected 1"),
        (lambda p: _raw(p, [SHARD_MAGIC, 1, 10], b"\0" * 4), r"truncated: header says 10 tokens \(1044 bytes\), file has 1028 bytes"),
        (lambda p: _raw(p, [SHARD_MAGIC, 1, 1], b"\0" * 6), r"size mismatch: header says 1 tokens \(1026 bytes\), file has 1030 bytes"),
        (lambda p: _raw(p, [SHARD_MAGIC, 1, -4]), r"negative token count -4"),
        (lambda p: p.write_bytes(b""), r"file is empty, expected a 1024-byte header"),
        (lambda p: p.write_bytes(b"\x01" * 100), r"truncated header: 100 bytes, expected at least 1024"),
        (lambda p: p.mkdir(), r"not a regular file"),
        (lambda p: None, r"no such file"),
    ],
    ids=["magic", "version", "truncated", "size_mismatch", "negative", "empty", "short_header", "directory", "missing"],
)
def test_bad_files_give_one_line_naming_the_file(tmp_path, make, pattern):
    p = tmp_path / "fineweb_val_000000.bin"
    make(p)
    for fn in (read_shard, shard_token_count):
        with pytest.raises(ShardError, match=pattern) as info:
            fn(p)
        msg = str(info.value)
        assert "\n" not in msg and str(p) in msg
        assert isinstance(info.value, PgolfError)


def test_shard_paths_sorted_exact_names_and_errors(tmp_path):
    for name in ["fineweb_train_000002.bin", "fineweb_train_000000.bin", "fineweb_val_000000.bin",
                 "fineweb_val_bytes_000000.bin", "fineweb_train_000001.bin.tmp-1", "notes.txt"]:
        (tmp_path / name).write_bytes(b"")
    assert [Path(p).name for p in shard_paths(tmp_path, "train")] == ["fineweb_train_000000.bin", "fineweb_train_000002.bin"]
    assert [Path(p).name for p in shard_paths(tmp_path, "val")] == ["fineweb_val_000000.bin"]
    assert [Path(p).name for p in shard_paths(str(tmp_path / "fineweb_train_*.bin"), "train")] == [
        "fineweb_train_000000.bin", "fineweb_train_000002.bin"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ShardError, match=r"no val shards in .*empty: expected files named fineweb_val_000000.bin"):
        shard_paths(empty, "val")
    with pytest.raises(ShardError, match=r"data path .*nope does not exist"):
        shard_paths(tmp_path / "nope", "train")
    with pytest.raises(ShardError, match=r"is not a directory"):
        shard_paths(tmp_path / "notes.txt", "train")
    with pytest.raises(ShardError, match=r"unknown split 'test'"):
        shard_paths(tmp_path, "test")
    with pytest.raises(ShardError, match=r"empty data path"):
        shard_paths("", "train")
    with pytest.raises(ShardError, match=r"no shard files match"):
        shard_paths(str(tmp_path / "zzz_*.bin"), "train")


def test_reads_the_real_fineweb_val_prefix():
    path = SHARED / "fineweb" / "fineweb_val_000000.bin"
    if not path.exists():
        pytest.skip("shared data not present")
    toks = read_shard(path)
    assert toks.size == 131072 and toks[0] == 1
    assert int(toks.max()) < 1024
