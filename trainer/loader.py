"""Training and validation token streams with the challenge's semantics.

Training: one sequential stream over the sorted train shards, wrapping around at the end. Each call takes one
global chunk of world_size * (local_tokens + 1) tokens; rank r uses the contiguous span
[r * (local_tokens + 1), (r + 1) * (local_tokens + 1)) of it, with x = span[:-1] and y = span[1:].
Validation: all val shards concatenated and truncated to a whole number of sequences plus one token.
"""

from __future__ import annotations

import glob
import os

import numpy as np
import torch

from trainer.errors import PgolfError
from trainer.shards import read_shard, shard_paths, shard_token_count


def _loader_train_files(pattern_or_dir) -> list:
    """Train shard paths from a directory (its fineweb_train_*.bin), a glob pattern, or a single shard file."""
    spec = os.fspath(pattern_or_dir)
    if not spec:
        raise PgolfError("training data path is empty: expected a directory or glob of fineweb_train_*.bin shards")
    if glob.has_magic(spec) or os.path.isdir(spec):
        return shard_paths(spec, "train")
    if os.path.isfile(spec):
        return [spec]
    raise PgolfError(f"training data path {spec} does not exist (expected a directory or glob of shards)")


class TokenStream:
    """Tokens of the given shards read in order, forever (wraps to the first shard after the last)."""

    def __init__(self, files):
        self.files = list(files)
        if not self.files:
            raise PgolfError("token stream needs at least one shard file")
        # Validate every header up front: a bad shard late in the list should fail now, not mid-run.
        counts = [shard_token_count(f) for f in self.files]
        if sum(counts) == 0:
            raise PgolfError(f"all {len(self.files)} shard(s) are empty, e.g. {self.files[0]}: no tokens to train on")
        self.file_idx = 0
        self.tokens = read_shard(self.files[0])
        self.pos = 0

    def _advance_file(self) -> None:
        self.file_idx = (self.file_idx + 1) % len(self.files)
        self.tokens = read_shard(self.files[self.file_idx])
        self.pos = 0

    def take(self, n: int) -> np.ndarray:
        """The next n tokens (uint16), crossing shard boundaries and wrapping as needed."""
        chunks = []
        remaining = int(n)
        while remaining > 0:
            avail = self.tokens.size - self.pos
            if avail <= 0:
                self._advance_file()
                continue
            k = min(remaining, avail)
            chunks.append(self.tokens[self.pos : self.pos + k])
            self.pos += k
            remaining -= k
        if not chunks:
            return np.zeros(0, dtype=np.uint16)
        return chunks[0] if len(chunks) == 1 else np.concatenate(chunks)


class DistributedTokenLoader:
    """Each call returns this rank's micro-batch (x, y), int64 [B, seq_len], from the shared sequential stream."""

    def __init__(self, pattern_or_dir, rank: int = 0, world_size: int = 1, device="cpu"):
        if world_size < 1 or not 0 <= rank < world_size:
            raise PgolfError(f"loader: rank {rank} is not in [0, world_size={world_size})")
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.device = torch.device(device)
        self.stream = TokenStream(_loader_train_files(pattern_or_dir))

    def next_batch(self, global_tokens: int, seq_len: int, grad_accum_steps: int):
        if seq_len < 1 or grad_accum_steps < 1:
            raise PgolfError(f"loader: seq_len ({seq_len}) and grad_accum_steps ({grad_accum_steps}) must be >= 1")
        local_tokens = int(global_tokens) // (self.world_size * int(grad_accum_steps))
        if local_tokens < seq_len or local_tokens % seq_len:
            raise PgolfError(
                f"loader: TRAIN_BATCH_TOKENS={global_tokens} over world_size {self.world_size} x grad_accum "
                f"{grad_accum_steps} gives {local_tokens} tokens per micro-batch, expected a positive multiple "
                f"of seq_len {seq_len}"
            )
        span = local_tokens + 1
        chunk = self.stream.take(span * self.world_size)
        local = torch.from_numpy(chunk[self.rank * span : (self.rank + 1) * span].astype(np.int64))
        x = local[:-1].reshape(-1, seq_len)
        y = local[1:].reshape(-1, seq_len)
        if self.device.type == "cuda":
            return x.pin_memory().to(self.device, non_blocking=True), y.pin_memory().to(self.device, non_blocking=True)
        return x.to(self.device), y.to(self.device)


def load_validation_tokens(data_path, seq_len: int, max_tokens: int = 0) -> torch.Tensor:
    """All val shards of `data_path` concatenated, truncated to ((N-1)//seq_len)*seq_len + 1 tokens (int64).

    max_tokens > 0 first keeps only the first max_tokens + 1 tokens (max_tokens targets), for quick local runs.
    """
    if seq_len < 1:
        raise PgolfError(f"validation: seq_len must be >= 1, got {seq_len}")
    files = shard_paths(data_path, "val")
    tokens = np.concatenate([read_shard(f) for f in files]) if len(files) > 1 else read_shard(files[0])
    if max_tokens and max_tokens > 0:
        tokens = tokens[: int(max_tokens) + 1]
    usable = ((tokens.size - 1) // seq_len) * seq_len
    if usable <= 0:
        raise PgolfError(
            f"validation split in {os.fspath(data_path)} has {tokens.size} tokens"
            f"{' (after VAL_MAX_TOKENS=' + str(max_tokens) + ')' if max_tokens else ''}, "
            f"expected at least seq_len + 1 = {seq_len + 1}"
        )
    return torch.from_numpy(tokens[: usable + 1].astype(np.int64))
