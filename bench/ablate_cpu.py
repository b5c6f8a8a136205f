#!/usr/bin/env python3
"""CPU-scale ablations of the record stack: which features help at a small shared shape, and which export scheme
(precision x compressor, GPTQ-lite / full GPTQ) gives the best post-quantization bpb per artifact byte.

CPU-scale evidence only: a 4-layer 128-wide model, seq 256, a few hundred steps on the mixed SP1024 corpus, scored
on a prefix of the real FineWeb validation split. It ranks features at this scale; it does not predict the GPU
numbers of the full 11-layer presets.

  python bench/ablate_cpu.py --data ../shared/data/sp1024_mixed \\
      --tokenizer ../shared/data/tokenizers/fineweb_1024_bpe.model --out /tmp/ablate

Training variants are cumulative (each adds features to the previous one) and run sequentially through
trainer.train.run (the real pipeline, EMA/QAT included); every trained model is then exported with each export
scheme (same weights) and the reloaded artifact is scored. One JSON line per result goes to OUT/results.jsonl and a
markdown table to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from trainer.artifact import artifact_label, export_artifact, load_artifact  # noqa: E402
from trainer.bpb import build_byte_lut, load_tokenizer  # noqa: E402
from trainer.config import Hyperparameters  # noqa: E402
from trainer.evaluate import eval_full, eval_sliding  # noqa: E402
from trainer.gptq import collect_hessians  # noqa: E402
from trainer.loader import DistributedTokenLoader, load_validation_tokens  # noqa: E402
from trainer.model import GPT  # noqa: E402
from trainer.train import run  # noqa: E402
from trainer.ttt import eval_ttt  # noqa: E402

# The shared shape and optimizer settings every variant uses (the stack's LRs; momentum warm-up shortened to the run).
SHAPE = dict(
    num_layers=4, model_dim=128, num_heads=4, num_kv_heads=2, mlp_mult=3.0, train_seq_len=256, eval_seq_len=256,
    train_batch_tokens=2048, grad_accum_steps=1, warmup_steps=0, lr_warmup_steps=10, max_wallclock_seconds=0.0,
    val_loss_every=0, train_log_every=50, val_batch_size=32768, compile=0, vocab_size=1024,
    matrix_lr=0.025, scalar_lr=0.025, tied_embed_lr=0.035, muon_momentum=0.99, muon_momentum_warmup_start=0.92,
    muon_momentum_warmup_steps=60, muon_wd=0.04, adam_wd=0.04, grad_clip_norm=0.3, ortho_init=1, unet_skips=1,
    mlp_activation="relu2", quant_scheme="*:int8", compressor="zlib", eval_stride=0, ttt_enabled=0,
    passthrough_max_numel=4096, save_raw_model=1,
)
# Cumulative training variants: (name, fields added on top of the previous variant).
VARIANTS = [
    ("base", {}),
    ("+leaky_relu2", dict(mlp_activation="leaky_relu2")),
    ("+smear+bigram", dict(smear_gate=1, bigram_vocab_size=512, bigram_dim=32)),
    ("+xsa+partial_rope", dict(xsa_last_n=2, rope_dims=16)),
    ("+ln_scale+ve", dict(ln_scale=1, ve_enabled=1, ve_dim=32, ve_layers="-2,-1")),
    ("+ema", dict(ema_enabled=1, ema_decay=0.997)),
    ("+late_qat_int6", dict(late_qat_threshold=0.15, quant_scheme="mlp:int6,attn:int6,*:int8",
                            quant_clip_search="99.9,99.95,99.99,99.999,100")),
]
# Export schemes applied to every trained model: (name, fields, use full-Hessian GPTQ).
CLIPS = "99.9,99.95,99.99,99.999,100"
SCHEMES = [
    ("int8+zlib", dict(quant_scheme="*:int8", compressor="zlib", quant_clip_search=""), False),
    ("int6+zlib", dict(quant_scheme="mlp:int6,attn:int6,*:int8", compressor="zlib", quant_clip_search=""), False),
    ("int6+zstd", dict(quant_scheme="mlp:int6,attn:int6,*:int8", compressor="zstd", quant_clip_search=""), False),
    ("int6+lzma", dict(quant_scheme="mlp:int6,attn:int6,*:int8", compressor="lzma", quant_clip_search=""), False),
    ("int6+brotli", dict(quant_scheme="mlp:int6,attn:int6,*:int8", compressor="brotli", quant_clip_search=""), False),
    ("int6 gptq-lite+lzma", dict(quant_scheme="mlp:int6,attn:int6,*:int8", compressor="lzma", quant_clip_search=CLIPS), False),
    ("int6 full-gptq+lzma", dict(quant_scheme="mlp:int6,attn:int6,*:int8", compressor="lzma", quant_clip_search=CLIPS), True),
    ("int4mlp/int6attn gptq-lite+lzma", dict(quant_scheme="mlp:int4,attn:int6,*:int8", compressor="lzma",
                                             quant_clip_search=CLIPS), False),
    ("int4mlp/int6attn packed gptq-lite+lzma", dict(quant_scheme="mlp:int4,attn:int6,*:int8", compressor="lzma",
                                                    quant_clip_search=CLIPS, bit_pack=1), False),
]


def variant_preset(upto: int) -> dict:
    p = dict(SHAPE)
    for _name, add in VARIANTS[: upto + 1]:
        p.update(add)
    return p


def with_fields(h: Hyperparameters, **fields) -> Hyperparameters:
    d = h.to_dict()
    d.update(fields)
    return Hyperparameters(**d)


def score_export(sd: dict, h: Hyperparameters, val, lut, hessians=None) -> tuple:
    blob, report = export_artifact(sd, h, 0, lambda _line: None, hessians=hessians)
    model = GPT(h)
    model.load_export_state_dict(load_artifact(blob))
    loss, bpb = eval_full(model, val, lut, h)
    return len(blob), bpb, model, report


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="dataset dir with fineweb_train_*.bin and fineweb_val_*.bin")
    ap.add_argument("--tokenizer", required=True, help="SentencePiece model (SP1024)")
    ap.add_argument("--out", required=True, help="directory for the runs and results.jsonl")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--warmdown", type=int, default=50)
    ap.add_argument("--val-tokens", type=int, default=16384)
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", default="", help="comma-separated variant indices to run (default: all)")
    ap.add_argument("--all-schemes", action="store_true", help="every export scheme on every variant (slower)")
    ap.add_argument("--ttt", action="store_true", help="also score the last variant's int6 model with sliding + legal TTT")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    results_path = os.path.join(args.out, "results.jsonl")
    only = {int(i) for i in args.only.split(",") if i.strip()} if args.only else set(range(len(VARIANTS)))

    sp = load_tokenizer(args.tokenizer, 1024)
    lut = build_byte_lut(sp, 1024)
    header = {"date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "torch": torch.__version__,
              "threads": torch.get_num_threads(), "cpus": os.cpu_count(), "steps": args.steps,
              "val_tokens": args.val_tokens, "seed": args.seed, "argv": " ".join(sys.argv)}
    print(json.dumps(header), flush=True)
    rows = []
    for vi, (vname, _add) in enumerate(VARIANTS):
        if vi not in only:
            continue
        preset = variant_preset(vi)
        preset.update(iterations=args.steps, warmdown_iters=args.warmdown, val_max_tokens=args.val_tokens,
                      data_path=args.data, tokenizer_path=args.tokenizer, seed=args.seed,
                      out_dir=os.path.join(args.out, f"v{vi}"), run_id=f"ablate_v{vi}")
        h = Hyperparameters.resolve(preset=preset, env={})
        t0 = time.perf_counter()
        m = run(h, code_bytes=0, log_console=False)
        train_s = time.perf_counter() - t0
        sd = torch.load(os.path.join(h.out_dir, "final_model.pt"), map_location="cpu")
        val = load_validation_tokens(h.data_path, h.eval_len, h.val_max_tokens)
        hessians = None
        # Every scheme on the last variant; the feature variants are compared at int8+zlib and int6 GPTQ-lite+lzma.
        schemes = SCHEMES if (vi == len(VARIANTS) - 1 or args.all_schemes) else [SCHEMES[0], SCHEMES[5]]
        for sname, fields, full_gptq in schemes:
            hs = with_fields(h, **fields, gptq_enabled=int(full_gptq))
            if full_gptq and hessians is None:
                model = GPT(h)
                model.load_export_state_dict(sd)
                loader = DistributedTokenLoader(h.data_path)
                batches = [loader.next_batch(h.train_seq_len, h.train_seq_len, 1)[0] for _ in range(64)]
                hessians = collect_hessians(model, batches)
            nbytes, bpb, qmodel, _rep = score_export(sd, hs, val, lut, hessians if full_gptq else None)
            row = {"variant": vname, "scheme": sname, "label": artifact_label(hs), "pre_quant_bpb": m["pre_quant_val_bpb"],
                   "post_quant_bpb": bpb, "model_bytes": nbytes, "params": m["model_params"], "steps": m["steps"],
                   "run_s": round(train_s, 1), "step_avg_ms": round(m["step_avg_ms"], 1)}
            if args.ttt and vi == len(VARIANTS) - 1 and sname == "int6 gptq-lite+lzma":
                he = with_fields(hs, eval_stride=64, ttt_enabled=1, ttt_chunk_tokens=4096, ttt_epochs=3, ttt_lr=0.002,
                                 ttt_batch_seqs=8, eval_batch_seqs=16)
                full = load_validation_tokens(h.data_path, 1, h.val_max_tokens)
                row["sliding_bpb"] = eval_sliding(qmodel, full, lut, he)[1]
                row["ttt_bpb"] = eval_ttt(qmodel, full, lut, he)[1]
            rows.append(row)
            with open(results_path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)
    print("\n| variant | scheme | pre-quant bpb | post-quant bpb | model bytes |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['scheme']} | {r['pre_quant_bpb']:.4f} | {r['post_quant_bpb']:.4f} | {r['model_bytes']:,} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
