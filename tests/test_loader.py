"""Training stream (challenge semantics across shard boundaries, wrapping, rank spans) and validation tokens."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from trainer.errors import PgolfError
from trainer.loader import DistributedTokenLoader, TokenStream, load_validation_tokens
from trainer.shards import write_shard

SHARED = Path(os.environ.get("PGOLF_SHARED_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data")


@pytest.fixture
def data_dir(tmp_path):
    # three train shards of different lengths whose concatenation is 0, 1, 2, ..., 99
    write_shard(tmp_path / "fineweb_train_000000.bin", np.arange(0, 30))
    write_shard(tmp_path / "fineweb_train_000001.bin", np.arange(30, 37))
    write_shard(tmp_path / "fineweb_train_000002.bin", np.arange(37, 100))
    write_shard(tmp_path / "fineweb_val_000000.bin", np.arange(500, 540))
    write_shard(tmp_path / "fineweb_val_000001.bin", np.arange(540, 551))
    return tmp_path


def _expected_stream(n):
    return [i % 100 for i in range(n)]


def test_stream_crosses_shards_and_wraps(data_dir):
    s = TokenStream(sorted(str(p) for p in data_dir.glob("fineweb_train_*.bin")))
    got = []
    for n in (25, 10, 40, 50, 3):
        got += s.take(n).tolist()
    assert got == _expected_stream(128)


@pytest.mark.parametrize("world_size, accum", [(1, 1), (2, 1), (4, 2)])
def test_rank_spans_partition_each_global_chunk(data_dir, world_size, accum):
    seq_len, global_tokens = 4, 32
    loaders = [DistributedTokenLoader(data_dir, r, world_size, "cpu") for r in range(world_size)]
    local = global_tokens // (world_size * accum)
    span = local + 1
    pos = 0
    for _ in range(6):  # enough calls to wrap past 100 tokens
        for r, ld in enumerate(loaders):
            x, y = ld.next_batch(global_tokens, seq_len, accum)
            assert x.dtype == torch.int64 and x.shape == (local // seq_len, seq_len) == y.shape
            want = _expected_stream(pos + span * world_size)[pos + r * span : pos + (r + 1) * span]
            assert x.flatten().tolist() == want[:-1]
            assert y.flatten().tolist() == want[1:]
        pos += span * world_size


def test_loader_accepts_glob_and_single_file(data_dir):
    ld = DistributedTokenLoader(str(data_dir / "fineweb_train_00000[12].bin"), 0, 1)
    x, _ = ld.next_batch(8, 8, 1)
    assert x.flatten().tolist() == list(range(30, 38))
    ld = DistributedTokenLoader(data_dir / "fineweb_train_000001.bin", 0, 1)
    x, y = ld.next_batch(8, 4, 1)
    # a 7-token single shard wraps onto itself
    assert x.flatten().tolist() == [30, 31, 32, 33, 34, 35, 36, 30]
    assert y.flatten().tolist() == [31, 32, 33, 34, 35, 36, 30, 31]


def test_loader_errors(data_dir, tmp_path_factory):
    with pytest.raises(PgolfError, match=r"training data path .*missing does not exist"):
        DistributedTokenLoader(data_dir / "missing", 0, 1)
    with pytest.raises(PgolfError, match="training data path is empty"):
        DistributedTokenLoader("", 0, 1)
    empty = tmp_path_factory.mktemp("nothing")
    with pytest.raises(PgolfError, match=r"no train shards in"):
        DistributedTokenLoader(empty, 0, 1)
    zero = tmp_path_factory.mktemp("zero")
    write_shard(zero / "fineweb_train_000000.bin", [])
    with pytest.raises(PgolfError, match=r"all 1 shard\(s\) are empty"):
        DistributedTokenLoader(zero, 0, 1)
    bad = tmp_path_factory.mktemp("bad")
    write_shard(bad / "fineweb_train_000000.bin", [1, 2, 3])
    (bad / "fineweb_train_000001.bin").write_bytes(b"\0" * 2000)
    with pytest.raises(PgolfError, match=r"fineweb_train_000001.bin: bad magic 0"):
        DistributedTokenLoader(bad, 0, 1)
    with pytest.raises(PgolfError, match=r"rank 2 is not in \[0, world_size=2\)"):
        DistributedTokenLoader(data_dir, 2, 2)
    ld = DistributedTokenLoader(data_dir, 0, 2)
    with pytest.raises(PgolfError, match=r"gives 5 tokens per micro-batch, expected a positive multiple of seq_len 4"):
        ld.next_batch(10, 4, 1)


def test_validation_tokens_concatenate_and_truncate(data_dir):
    v = load_validation_tokens(data_dir, 8)
    # 51 tokens -> ((51-1)//8)*8 + 1 = 49
    assert v.dtype == torch.int64 and v.tolist() == list(range(500, 549))
    v = load_validation_tokens(data_dir, 8, max_tokens=20)
    assert v.tolist() == list(range(500, 517))  # 21 kept -> 2 sequences + 1
    v = load_validation_tokens(data_dir, 50)
    assert v.numel() == 51


def test_validation_errors(data_dir, tmp_path_factory):
    with pytest.raises(PgolfError, match=r"has 51 tokens, expected at least seq_len \+ 1 = 52"):
        load_validation_tokens(data_dir, 51)
    with pytest.raises(PgolfError, match=r"has 5 tokens \(after VAL_MAX_TOKENS=4\), expected at least"):
        load_validation_tokens(data_dir, 8, max_tokens=4)
    only_train = tmp_path_factory.mktemp("only_train")
    write_shard(only_train / "fineweb_train_000000.bin", [1, 2, 3])
    with pytest.raises(PgolfError, match=r"no val shards in"):
        load_validation_tokens(only_train, 8)
    with pytest.raises(PgolfError, match=r"does not exist"):
        load_validation_tokens(only_train / "x", 8)


def test_real_validation_prefix_length():
    d = SHARED / "fineweb"
    if not (d / "fineweb_val_000000.bin").exists():
        pytest.skip("shared data not present")
    v = load_validation_tokens(d, 1024)
    assert v.numel() == ((131072 - 1) // 1024) * 1024 + 1 == 130049
    assert v[0] == 1


@pytest.mark.gpu
def test_cuda_batches_match_cpu(data_dir):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    cpu = DistributedTokenLoader(data_dir, 1, 2, "cpu")
    gpu = DistributedTokenLoader(data_dir, 1, 2, "cuda")
    for _ in range(5):
        xc, yc = cpu.next_batch(32, 4, 2)
        xg, yg = gpu.next_batch(32, 4, 2)
        assert xg.is_cuda and xg.dtype == torch.int64
        assert torch.equal(xg.cpu(), xc) and torch.equal(yg.cpu(), yc)


def test_stream_equals_concatenation_for_random_layouts(tmp_path_factory):
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=40, deadline=None)
    @given(sizes=st.lists(st.integers(0, 40), min_size=1, max_size=5).filter(lambda s: sum(s) > 0),
           takes=st.lists(st.integers(0, 90), min_size=1, max_size=8))
    def check(sizes, takes):
        d = tmp_path_factory.mktemp("h")
        start = 0
        for i, n in enumerate(sizes):
            write_shard(d / f"fineweb_train_{i:06d}.bin", np.arange(start, start + n))
            start += n
        total = start
        s = TokenStream(sorted(str(p) for p in d.glob("fineweb_train_*.bin")))
        got = np.concatenate([s.take(n) for n in takes]).tolist()
        assert got == [i % total for i in range(sum(takes))]

    check()
