"""`pgolf data build`: text documents -> (optionally) a SentencePiece BPE tokenizer -> challenge-format shards.

Follows the challenge's export (`download_hf_docs_and_tokenize.py`): documents in input order, each encoded as
BOS + tokens (no EOS); the first `val_docs` documents form the validation split, the rest the training split;
documents are concatenated and cut into shards of exactly `shard_tokens` tokens, and val and train never share a
shard. The tokenizer, when trained here, uses the challenge's SentencePiece settings. Output is deterministic: the
same inputs and options give byte-identical files (no timestamps or absolute paths; fixed thread count and seed).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import lzma
import os
import random
from pathlib import Path

import numpy as np

from trainer.bpb import build_byte_lut, load_tokenizer
from trainer.corpus import CORPUS_VAL_DOCS, corpus_path
from trainer.errors import PgolfError
from trainer.shards import SHARD_MAX_TOKENS, write_bytes_atomic, write_shard

# The challenge's SentencePiece trainer settings (download_hf_docs_and_tokenize.py).
SP_TRAINER_SETTINGS = dict(
    model_type="bpe",
    character_coverage=0.999,
    byte_fallback=True,
    split_digits=True,
    normalization_rule_name="nmt_nfkc",
    add_dummy_prefix=False,
    pad_id=0,
    bos_id=1,
    eos_id=2,
    unk_id=3,
    hard_vocab_limit=False,
)
CHALLENGE_VAL_DOCS = 50_000
DEFAULT_SHARD_TOKENS = 10**8
DEFAULT_TOKENIZER_SENTENCES = 500_000
DEFAULT_THREADS = 2
SENTENCE_MAX_CHARS = 2048  # SentencePiece silently drops sentences over 4192 bytes; long lines are cut to fit
SAMPLE_SEED = 20240520
ENCODE_BATCH_CHARS = 8_000_000
MANIFEST_NAME = "manifest.json"


# ---------------------------------------------------------------------------------------------- input documents
def _open_text(path: Path):
    name = path.name.lower()
    if name.endswith(".xz"):
        return lzma.open(path, "rt", encoding="utf-8")
    if name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, "r", encoding="utf-8")


def _input_kind(path: Path) -> str:
    name = path.name.lower()
    for suffix in (".xz", ".gz"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    if name.endswith(".jsonl"):
        return "jsonl"
    if name.endswith(".txt"):
        return "txt"
    raise PgolfError(f"input {path}: unsupported file type, expected .jsonl or .txt (optionally .xz/.gz compressed)")


def iter_documents(paths):
    """Yield the text of every document: one per non-blank line of a .jsonl (its `text` field), one per .txt file."""
    for path in paths:
        path = Path(path)
        kind = _input_kind(path)
        if not path.is_file():
            raise PgolfError(f"input {path}: no such file")
        try:
            with _open_text(path) as f:
                if kind == "txt":
                    yield f.read()
                    continue
                for lineno, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise PgolfError(f"input {path}:{lineno}: invalid JSON ({exc.msg} at column {exc.colno})") from None
                    if not isinstance(rec, dict) or not isinstance(rec.get("text"), str):
                        got = type(rec).__name__ if not isinstance(rec, dict) else f"keys {sorted(rec)[:5]}"
                        raise PgolfError(f"input {path}:{lineno}: expected a JSON object with a string 'text' field, got {got}")
                    yield rec["text"]
        except UnicodeDecodeError as exc:
            raise PgolfError(f"input {path}: not UTF-8 text (byte {exc.start}: {exc.reason})") from None
        except (OSError, EOFError, lzma.LZMAError) as exc:
            raise PgolfError(f"input {path}: cannot read: {exc}") from None


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------- tokenizer
def _sentences_of(text: str):
    """Non-blank lines of a document, long lines cut at whitespace into pieces SentencePiece will not drop."""
    for line in text.split("\n"):
        line = line.strip()
        while len(line) > SENTENCE_MAX_CHARS:
            cut = line.rfind(" ", 0, SENTENCE_MAX_CHARS)
            cut = cut if cut > 0 else SENTENCE_MAX_CHARS
            yield line[:cut]
            line = line[cut:].lstrip()
        if line:
            yield line


def sample_sentences(texts, max_sentences: int) -> list:
    """Up to `max_sentences` sentences of `texts`: all of them in order when they fit, else a seeded reservoir sample."""
    rng = random.Random(SAMPLE_SEED)
    sample: list = []
    seen = 0
    for text in texts:
        for s in _sentences_of(text):
            if len(sample) < max_sentences:
                sample.append(s)
            else:
                j = rng.randrange(seen + 1)
                if j < max_sentences:
                    sample[j] = s
            seen += 1
    return sample


def train_tokenizer(sentences, vocab_size: int, threads: int = DEFAULT_THREADS) -> bytes:
    """Train a SentencePiece BPE model with the challenge's settings; returns the serialized model."""
    import sentencepiece as spm

    if not sentences:
        raise PgolfError("tokenizer training: the training documents contain no text")
    if not 260 < vocab_size <= 65536:
        raise PgolfError(f"--vocab-size {vocab_size}: expected 261..65536 (4 special + 256 byte pieces + merges, uint16 ids)")
    spm.set_random_generator_seed(SAMPLE_SEED)
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences),
            model_writer=model,
            vocab_size=int(vocab_size),
            num_threads=int(threads),
            input_sentence_size=0,
            shuffle_input_sentence=False,
            minloglevel=2,
            **SP_TRAINER_SETTINGS,
        )
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "failed"
        raise PgolfError(f"tokenizer training with --vocab-size {vocab_size}: {first}") from None
    return model.getvalue()


# ---------------------------------------------------------------------------------------------- shard writing
class _SplitWriter:
    """Concatenates documents of one split and writes fineweb_{split}_%06d.bin shards of exactly shard_tokens."""

    def __init__(self, out_dir: Path, split: str, shard_tokens: int):
        self.out_dir, self.split, self.shard_tokens = out_dir, split, shard_tokens
        self.buf: list = []
        self.buffered = 0
        self.files: list = []
        self.documents = self.tokens = self.bytes = self.text_bytes = 0

    def add(self, ids: np.ndarray, nbytes: int, text_bytes: int) -> None:
        self.documents += 1
        self.tokens += ids.size
        self.bytes += nbytes
        self.text_bytes += text_bytes
        while ids.size:
            k = min(ids.size, self.shard_tokens - self.buffered)
            self.buf.append(ids[:k])
            self.buffered += k
            ids = ids[k:]
            if self.buffered == self.shard_tokens:
                self.flush()

    def flush(self) -> None:
        if not self.buffered:
            return
        name = f"fineweb_{self.split}_{len(self.files):06d}.bin"
        write_shard(self.out_dir / name, np.concatenate(self.buf))
        self.files.append(name)
        self.buf, self.buffered = [], 0

    def summary(self) -> dict:
        return {
            "documents": self.documents,
            "tokens": self.tokens,
            "bytes": self.bytes,
            "bytes_per_token": round(self.bytes / self.tokens, 6) if self.tokens else 0.0,
            "text_bytes": self.text_bytes,
            "files": list(self.files),
        }


def _remove_stale_shards(out_dir: Path, keep: set, log) -> None:
    import re

    pattern = re.compile(r"fineweb_(train|val)_\d+\.bin")
    for name in sorted(os.listdir(out_dir)):
        if pattern.fullmatch(name) and name not in keep:
            os.remove(out_dir / name)
            log(f"build: removed stale shard {out_dir / name} from an earlier build")


# ---------------------------------------------------------------------------------------------- the build
def build_dataset(
    out_dir,
    texts=None,
    tokenizer=None,
    vocab_size: int = 1024,
    val_docs=None,
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
    threads: int = DEFAULT_THREADS,
    tokenizer_sentences: int = DEFAULT_TOKENIZER_SENTENCES,
    log=print,
) -> dict:
    """Build shards, tokenizer copy and manifest.json in `out_dir`; returns the manifest (see docs in data_cli).

    texts: .jsonl/.txt paths, or None for the embedded corpus. tokenizer: a SentencePiece model path, or None to
    train one of `vocab_size` pieces on the training documents. val_docs: None means the challenge's 50,000
    (16 for the embedded corpus).
    """
    embedded = not texts
    paths = [corpus_path()] if embedded else [Path(p) for p in texts]
    for p in paths:
        _input_kind(p)
        if not p.is_file():
            raise PgolfError(f"input {p}: no such file")
    if val_docs is None:
        val_docs = CORPUS_VAL_DOCS if embedded else CHALLENGE_VAL_DOCS
    if val_docs < 1:
        raise PgolfError(f"--val-docs {val_docs}: expected at least 1 validation document")
    if not 1 <= shard_tokens <= SHARD_MAX_TOKENS:
        raise PgolfError(f"--shard-tokens {shard_tokens}: expected 1..{SHARD_MAX_TOKENS}")
    if threads < 1:
        raise PgolfError(f"--threads {threads}: expected at least 1")
    if tokenizer_sentences < 1:
        raise PgolfError(f"--tokenizer-sentences {tokenizer_sentences}: expected at least 1")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise PgolfError(f"--out {out_dir}: exists and is not a directory")

    # Count documents first: a bad --val-docs should fail before minutes of tokenizer training.
    n_docs = sum(1 for _ in iter_documents(paths))
    if n_docs <= val_docs:
        raise PgolfError(
            f"--val-docs {val_docs} leaves no training documents: the input has {n_docs} documents "
            f"({', '.join(p.name for p in paths)})"
        )
    import sentencepiece as spm

    given = load_tokenizer(tokenizer, 0) if tokenizer is not None else None
    if given is None and not 260 < vocab_size <= 65536:
        raise PgolfError(f"--vocab-size {vocab_size}: expected 261..65536 (4 special + 256 byte pieces + merges, uint16 ids)")
    out_dir.mkdir(parents=True, exist_ok=True)

    if given is None:
        train_texts = (t for i, t in enumerate(iter_documents(paths)) if i >= val_docs)
        sentences = sample_sentences(train_texts, tokenizer_sentences)
        log(f"build: training a {vocab_size}-piece SentencePiece BPE tokenizer on {len(sentences):,} sentences")
        proto = train_tokenizer(sentences, vocab_size, threads)
        sp = spm.SentencePieceProcessor(model_proto=proto)
        tok_name = f"fineweb_{sp.vocab_size()}_bpe.model"
        if sp.vocab_size() != vocab_size:
            log(f"build: note: the tokenizer has {sp.vocab_size()} pieces, not {vocab_size} (too little text); "
                f"train with VOCAB_SIZE={sp.vocab_size()}")
        tok_info = {"trained": True, "trainer_settings": dict(SP_TRAINER_SETTINGS, num_threads=threads),
                    "training_sentences": len(sentences)}
    else:
        sp = given
        proto = Path(tokenizer).read_bytes()
        tok_name = Path(tokenizer).name
        tok_info = {"trained": False}
    if sp.vocab_size() > 65536:
        raise PgolfError(f"tokenizer {tokenizer}: {sp.vocab_size()} pieces do not fit uint16 shard ids (max 65536)")
    bos = sp.bos_id()
    if bos < 0:
        raise PgolfError(f"tokenizer {tokenizer}: has no BOS piece; documents must start with BOS")
    write_bytes_atomic(out_dir / tok_name, proto)

    lut = build_byte_lut(sp, sp.vocab_size())
    base = lut.base_bytes.numpy().astype(np.int64)
    lead = lut.has_leading_space.numpy()
    boundary = lut.is_boundary.numpy()
    writers = {"val": _SplitWriter(out_dir, "val", shard_tokens), "train": _SplitWriter(out_dir, "train", shard_tokens)}

    def encode_batch(batch, first_index):
        encoded = sp.encode(batch, num_threads=threads)
        for j, (text, ids) in enumerate(zip(batch, encoded)):
            doc = np.empty(len(ids) + 1, dtype=np.int64)
            doc[0] = bos
            doc[1:] = ids
            nbytes = int(base[doc].sum()) + int((lead[doc[1:]] & ~boundary[doc[:-1]]).sum())
            split = "val" if first_index + j < val_docs else "train"
            if split == "train":
                writers["val"].flush()  # val and train never share a shard
            writers[split].add(doc.astype(np.uint16), nbytes, len(text.encode("utf-8")))

    batch, chars, first = [], 0, 0
    for i, text in enumerate(iter_documents(paths)):
        # Batches never straddle the val/train boundary, so the split of each document is decided in order.
        if batch and (chars >= ENCODE_BATCH_CHARS or i == val_docs):
            encode_batch(batch, first)
            batch, chars, first = [], 0, i
        batch.append(text)
        chars += len(text)
    if batch:
        encode_batch(batch, first)
    for w in writers.values():
        w.flush()
    kept = set(writers["val"].files) | set(writers["train"].files)
    _remove_stale_shards(out_dir, kept, log)

    splits = {name: w.summary() for name, w in writers.items()}
    manifest = {
        "format": "pgolf-data/1",
        "sources": [
            {"name": p.name, "sha256": _file_sha256(p), "embedded": embedded} for p in paths
        ],
        "tokenizer": dict(
            path=tok_name, sha256=hashlib.sha256(proto).hexdigest(), vocab_size=int(sp.vocab_size()), **tok_info
        ),
        "bos_id": int(bos),
        "eos_id": int(sp.eos_id()),
        "append_eos": False,
        "val_docs": int(val_docs),
        "shard_tokens": int(shard_tokens),
        "train_glob": "fineweb_train_*.bin",
        "val_glob": "fineweb_val_*.bin",
        "splits": splits,
        # The challenge manifest's stats block, for tools that read it.
        "stats": {
            "docs_total": splits["val"]["documents"] + splits["train"]["documents"],
            "docs_val": splits["val"]["documents"],
            "docs_train": splits["train"]["documents"],
            "files_total": len(splits["val"]["files"]) + len(splits["train"]["files"]),
            "files_val": len(splits["val"]["files"]),
            "files_train": len(splits["train"]["files"]),
            "tokens_total": splits["val"]["tokens"] + splits["train"]["tokens"],
            "tokens_val": splits["val"]["tokens"],
            "tokens_train": splits["train"]["tokens"],
        },
    }
    write_bytes_atomic(out_dir / MANIFEST_NAME, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
    for name in ("val", "train"):
        s = splits[name]
        log(f"build: {name}: {s['documents']:,} documents, {s['tokens']:,} tokens, {s['bytes']:,} bytes "
            f"({s['bytes_per_token']:.4f} bytes/token), {len(s['files'])} shard(s)")
    log(f"build: wrote {out_dir / tok_name} and {out_dir / MANIFEST_NAME}")
    return manifest

