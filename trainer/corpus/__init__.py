"""The embedded corpus: public-domain books so `pgolf data build` and `pgolf demo` work offline.

`corpus.jsonl.xz` holds one JSON record per chapter (`source`, `title`, `text`) of Jane Austen's six novels and
Moby Dick, shuffled with a fixed seed so that the first documents (the validation split) mix both authors.
See README.md in this folder for provenance and how the file was made.
"""

from __future__ import annotations

from pathlib import Path

CORPUS_FILE = "corpus.jsonl.xz"
# Documents the embedded corpus puts in the validation split unless --val-docs says otherwise
# (413 chapters in all; 16 chapters are about 60k SP1024 tokens, enough for a stable demo val_bpb).
CORPUS_VAL_DOCS = 16


def corpus_path() -> Path:
    """Path of the embedded corpus (a .jsonl.xz file readable by `pgolf data build --text`)."""
    return Path(__file__).resolve().parent / CORPUS_FILE
