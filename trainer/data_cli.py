"""`pgolf data fetch | build | stats`: get the challenge data, build shards from your own text, inspect shards."""

from __future__ import annotations

import argparse
import json
import sys

from trainer.errors import PgolfError


def _count(text: str) -> int:
    """An integer count; also accepts 1e8 style."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not value.is_integer():
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}")
    return int(value)


def _handle_fetch(args) -> int:
    from trainer.data_fetch import fetch_dataset

    fetch_dataset(
        variant=args.variant,
        train_shards=args.train_shards,
        out_dir=args.out,
        repo_id=args.repo_id,
        val_shards=args.val_shards,
        remote_root=args.remote_root,
        skip_manifest=args.skip_manifest,
        log=lambda line: print(line, flush=True),
    )
    return 0


def _handle_build(args) -> int:
    from trainer.data_build import build_dataset

    if args.tokenizer and args.vocab_size is not None:
        raise PgolfError("data build: give either --tokenizer or --vocab-size, not both")
    build_dataset(
        out_dir=args.out,
        texts=args.text,
        tokenizer=args.tokenizer,
        vocab_size=args.vocab_size if args.vocab_size is not None else 1024,
        val_docs=args.val_docs,
        shard_tokens=args.shard_tokens,
        threads=args.threads,
        tokenizer_sentences=args.tokenizer_sentences,
        log=lambda line: print(line, flush=True),
    )
    return 0


def _handle_stats(args) -> int:
    from trainer.data_stats import data_stats, format_stats

    stats = data_stats(args.path, args.tokenizer)
    if args.json:
        sys.stdout.write(json.dumps(stats, sort_keys=True) + "\n")
    else:
        print(format_stats(stats))
    return 0


def add_parser(sub, name: str, help_text: str) -> argparse.ArgumentParser:
    p = sub.add_parser(
        name,
        help=help_text,
        description="Fetch the challenge's tokenized FineWeb, build challenge-format shards from your own text "
        "(or the embedded public-domain corpus), and count tokens, documents and val_bpb bytes of shards.",
    )
    dsub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    dsub.required = True

    f = dsub.add_parser(
        "fetch",
        help="download challenge shards and tokenizer from the Hugging Face hub",
        description="Download manifest.json, the validation shards, the first N training shards and the tokenizer "
        "of a challenge dataset repo (repo_type=dataset) into OUT, laid out as the challenge's data/ folder: "
        "OUT/datasets/fineweb10B_<variant>/fineweb_{train,val}_%06d.bin and OUT/tokenizers/. Resumable: valid "
        "files already in OUT are kept. Every shard is validated. Needs network access (or a local mirror).",
    )
    f.add_argument("--variant", default="sp1024",
                   help="tokenizer variant: sp1024 (repo willdepueoai/parameter-golf) or sp8192 "
                        "(kevclark/parameter-golf); other sp<N> need --repo-id (default: %(default)s)")
    f.add_argument("--train-shards", type=int, default=80, metavar="N",
                   help="number of training shards of 100M tokens to fetch, 0 for validation only "
                        "(default: %(default)s, the challenge's 8B tokens)")
    f.add_argument("--val-shards", type=int, default=None, metavar="N",
                   help="number of validation shards (default: the count in the repo's manifest.json, else 1)")
    f.add_argument("--out", default="data", metavar="DIR",
                   help="output folder, the challenge's data/ layout (default: %(default)s)")
    f.add_argument("--repo-id", default=None, metavar="REPO",
                   help="Hugging Face dataset repo, or a local directory laid out like one "
                        "(default: $MATCHED_FINEWEB_REPO_ID, else the variant's repo)")
    f.add_argument("--remote-root", default=None, metavar="PREFIX",
                   help="folder of the repo holding manifest.json, datasets/ and tokenizers/ "
                        "(default: $MATCHED_FINEWEB_REMOTE_ROOT_PREFIX, else 'datasets')")
    f.add_argument("--skip-manifest", action="store_true",
                   help="do not read manifest.json; assume 1 val shard (or --val-shards) and "
                        "tokenizers/fineweb_<V>_bpe.model")
    f.set_defaults(handler=_handle_fetch)

    b = dsub.add_parser(
        "build",
        help="tokenize text into challenge-format shards (and train a tokenizer)",
        description="Read documents (.jsonl: one JSON object per line with a 'text' field; .txt: the whole file "
        "is one document; .xz/.gz compressed files work too), encode each as BOS + tokens (no EOS), write the "
        "first --val-docs documents to fineweb_val_000000.bin and the rest to fineweb_train_%06d.bin shards, "
        "copy the tokenizer into OUT and write OUT/manifest.json (tokenizer sha256; documents, tokens, bytes and "
        "bytes/token per split). Without --tokenizer a SentencePiece BPE tokenizer is trained on the training "
        "documents with the challenge's settings. Same inputs give byte-identical output.",
    )
    b.add_argument("--text", nargs="+", default=None, metavar="FILE",
                   help="input .jsonl/.txt files in order (default: the embedded Austen + Moby Dick corpus)")
    b.add_argument("--tokenizer", default=None, metavar="MODEL",
                   help="use this SentencePiece .model instead of training one")
    b.add_argument("--vocab-size", type=int, default=None, metavar="V",
                   help="pieces of the tokenizer to train (default: 1024)")
    b.add_argument("--val-docs", type=int, default=None, metavar="N",
                   help="leading documents that form the validation split "
                        "(default: 50000 as the challenge, 16 for the embedded corpus)")
    b.add_argument("--shard-tokens", type=_count, default=10**8, metavar="N",
                   help="tokens per shard file (default: 100000000 as the challenge)")
    b.add_argument("--out", required=True, metavar="DIR", help="output folder for shards, tokenizer and manifest.json")
    b.add_argument("--threads", type=int, default=2, metavar="N",
                   help="threads for tokenizer training and encoding; recorded in the tokenizer, so keep it "
                        "fixed for identical output (default: %(default)s)")
    b.add_argument("--tokenizer-sentences", type=int, default=500_000, metavar="N",
                   help="at most this many lines (a seeded sample) train the tokenizer (default: %(default)s)")
    b.set_defaults(handler=_handle_build)

    s = dsub.add_parser(
        "stats",
        help="tokens, documents and val_bpb bytes of a shard or data folder",
        description="Count tokens, documents (BOS tokens) and bytes by the challenge's val_bpb rule (piece bytes "
        "without the leading space mark, 1 per byte-fallback piece, 0 for control pieces, +1 for a leading space "
        "after a non-control token). Every token in the files is counted as a target; a split's shards are one "
        "stream in sorted order and the first token's predecessor counts as a boundary (shards start with BOS, "
        "which has 0 bytes), so `bytes` is exactly what val_bpb divides by and equals the UTF-8 length of the "
        "decoded documents. For a folder the val and train splits are reported separately and in total.",
    )
    s.add_argument("path", metavar="PATH", help="a .bin shard or a folder of fineweb_{train,val}_*.bin shards")
    s.add_argument("--tokenizer", required=True, metavar="MODEL", help="the SentencePiece .model the shards use")
    s.add_argument("--json", action="store_true",
                   help="print one JSON object (tokens, documents, bytes, bytes_per_token, shards; splits for a folder)")
    s.set_defaults(handler=_handle_stats)
    return p
