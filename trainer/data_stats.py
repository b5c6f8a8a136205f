"""`pgolf data stats`: tokens, documents and bytes (the challenge's byte rule) of a shard or a data directory.

Counting convention: every token in the files is counted as a target, its predecessor being the token before it
in the split's stream (shards of a split are concatenated in sorted order, as the loaders read them) and the very
first token's predecessor treated as a boundary. Every document starts with BOS (0 bytes), so the byte total is
exactly what val_bpb divides by when these tokens are scored, and it equals the UTF-8 length of the decoded
documents (315,257 bytes over the 131,072 tokens of the public FineWeb validation prefix with the SP1024 model).
`tokens` is the number of tokens in the files (the eval scores N-1 targets of the stream; the first is a BOS).
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np

from trainer.bpb import build_byte_lut, load_tokenizer
from trainer.errors import PgolfError
from trainer.shards import SHARD_SPLITS, read_shard, shard_paths

STATS_CHUNK_TOKENS = 1 << 24


class _ByteCounter:
    """Streams token arrays through the byte rule, carrying the previous token across calls."""

    def __init__(self, sp):
        lut = build_byte_lut(sp, int(sp.vocab_size()))
        self.vocab = int(sp.vocab_size())
        self.base = lut.base_bytes.numpy().astype(np.int64)
        self.lead = lut.has_leading_space.numpy()
        self.boundary = lut.is_boundary.numpy()
        self.bos = int(sp.bos_id())
        self.prev_is_boundary = True
        self.tokens = self.documents = self.bytes = 0

    def add(self, tokens: np.ndarray, where: str) -> None:
        if tokens.size == 0:
            return
        top = int(tokens.max())
        if top >= self.vocab:
            pos = int(np.argmax(tokens >= self.vocab))
            raise PgolfError(
                f"{where}: token id {top} (first out-of-range id at position {pos}) is outside the tokenizer's "
                f"{self.vocab} pieces; wrong --tokenizer?"
            )
        for start in range(0, tokens.size, STATS_CHUNK_TOKENS):
            t = tokens[start : start + STATS_CHUNK_TOKENS].astype(np.intp)
            lead = self.lead[t]
            self.bytes += int(self.base[t].sum())
            self.bytes += int((lead[1:] & ~self.boundary[t[:-1]]).sum())
            if lead[0] and not self.prev_is_boundary:
                self.bytes += 1
            self.prev_is_boundary = bool(self.boundary[t[-1]])
            self.tokens += t.size
            if self.bos >= 0:
                self.documents += int((t == self.bos).sum())

    def summary(self, shards: int) -> dict:
        return {
            "tokens": self.tokens,
            "documents": self.documents,
            "bytes": self.bytes,
            "bytes_per_token": round(self.bytes / self.tokens, 6) if self.tokens else 0.0,
            "shards": shards,
        }


def _stream_stats(files, sp) -> dict:
    counter = _ByteCounter(sp)
    for f in files:
        counter.add(read_shard(f), f"shard {f}")
    return counter.summary(len(files))


def _check_manifest_tokenizer(folder: str, tokenizer) -> None:
    """When `pgolf data build` left a manifest.json beside the shards, the tokenizer must be the one it used."""
    manifest = os.path.join(folder, "manifest.json")
    try:
        with open(manifest, encoding="utf-8") as f:
            recorded = (json.load(f).get("tokenizer") or {})
    except (OSError, ValueError, AttributeError):
        return  # no manifest, or the challenge's (which records no hash): nothing to compare
    if not isinstance(recorded, dict) or not recorded.get("sha256"):
        return
    with open(tokenizer, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    if digest != recorded["sha256"]:
        raise PgolfError(
            f"tokenizer {tokenizer} (sha256 {digest[:12]}...) is not the one these shards were built with: "
            f"{manifest} records {recorded.get('path')} (sha256 {str(recorded['sha256'])[:12]}...)"
        )


def data_stats(path, tokenizer) -> dict:
    """Statistics of one shard, or of each split (`val`, `train`) of a directory plus their totals."""
    path = os.fspath(path)
    sp = load_tokenizer(tokenizer, 0)
    folder = path if os.path.isdir(path) else os.path.dirname(path) or "."
    _check_manifest_tokenizer(folder, tokenizer)
    result = {"path": path, "tokenizer": os.fspath(tokenizer), "tokenizer_vocab_size": int(sp.vocab_size())}
    if os.path.isdir(path):
        splits = {}
        for split in SHARD_SPLITS:
            try:
                files = shard_paths(path, split)
            except PgolfError:
                continue
            splits[split] = _stream_stats(files, sp)
        if not splits:
            raise PgolfError(f"no shards in {path}: expected fineweb_train_*.bin and/or fineweb_val_*.bin")
        total = {k: sum(s[k] for s in splits.values()) for k in ("tokens", "documents", "bytes", "shards")}
        total["bytes_per_token"] = round(total["bytes"] / total["tokens"], 6) if total["tokens"] else 0.0
        result.update(total)
        result["splits"] = splits
        return result
    if not os.path.exists(path):
        raise PgolfError(f"{path}: no such shard or directory")
    result.update(_stream_stats([path], sp))
    return result


def format_stats(stats: dict) -> str:
    """Human-readable table of `data_stats` output."""
    rows = [("split", "shards", "documents", "tokens", "bytes", "bytes/token")]
    for name, s in (stats.get("splits") or {}).items():
        rows.append((name, s["shards"], s["documents"], s["tokens"], s["bytes"], s["bytes_per_token"]))
    label = "total" if stats.get("splits") else os.path.basename(stats["path"])
    rows.append((label, stats["shards"], stats["documents"], stats["tokens"], stats["bytes"], stats["bytes_per_token"]))

    def cell(v):
        if isinstance(v, float):
            return f"{v:.4f}"
        return f"{v:,}" if isinstance(v, int) else str(v)

    cells = [[cell(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(rows[0]))]
    lines = [f"{stats['path']} (tokenizer {stats['tokenizer']}, {stats['tokenizer_vocab_size']} pieces; "
             "bytes by the challenge's val_bpb rule)"]
    for r in cells:
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    return "\n".join(lines)
