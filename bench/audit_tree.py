"""Benchmark `pgolf audit` on a tree of record folders.

    python bench/audit_tree.py [TREE] [--folders 60] [--jobs 2] [--max-kb 160]

Without TREE it generates one under a temp dir: 60 record folders (README, submission.json, 3 seed logs that echo
the source at the top like the baseline's log0(code), train_gpt.py of 20-160 KB in the challenge's style -
Hyperparameters from os.environ, model classes, Muon, quantization, eval_val, eval_val_sliding, score-first TTT;
every 4th one an lzma+base85 2-line wrapper). Prints wall time, median/max seconds per submission and verdicts."""

from __future__ import annotations

import argparse
import base64
import json
import lzma
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

HEADER = '''"""Record script (generated for the auditor benchmark)."""
import glob, io, lzma, math, os, time
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class Hyperparameters:
    data_path = os.environ.get("DATA_PATH", "./data/datasets/fineweb10B_sp1024")
    train_files = os.path.join(data_path, "fineweb_train_*.bin")
    val_files = os.path.join(data_path, "fineweb_val_*.bin")
    seed = int(os.environ.get("SEED", 1337))
    iterations = int(os.environ.get("ITERATIONS", 20000))
    train_seq_len = int(os.environ.get("TRAIN_SEQ_LEN", 2048))
    eval_stride = int(os.environ.get("EVAL_STRIDE", 64))
    ttt_enabled = bool(int(os.environ.get("TTT_ENABLED", "0")))
    ttt_lr = float(os.environ.get("TTT_LR", 0.002))
    ttt_epochs = int(os.environ.get("TTT_EPOCHS", 3))
    ttt_chunk_tokens = int(os.environ.get("TTT_CHUNK_TOKENS", 32768))
{extra_hp}

def load_data_shard(file):
    header = np.fromfile(file, dtype="<i4", count=256)
    if header.size != 256 or int(header[0]) != 20240520:
        raise ValueError(f"Unexpected shard header for {file}")
    return torch.from_numpy(np.fromfile(file, dtype="<u2", offset=1024).astype(np.uint16))


def load_validation_tokens(pattern, seq_len):
    files = [Path(p) for p in sorted(glob.glob(pattern))]
    tokens = torch.cat([load_data_shard(f) for f in files]).contiguous()
    usable = ((tokens.numel() - 1) // seq_len) * seq_len
    return tokens[: usable + 1]


class TokenStream:
    def __init__(self, pattern):
        self.files = sorted(glob.glob(pattern))
        self.idx = 0
        self.tokens = load_data_shard(self.files[0])
        self.pos = 0

    def take(self, n):
        chunk = self.tokens[self.pos:self.pos + n]
        self.pos += n
        return chunk
'''

BLOCK = """

class Block{i}(nn.Module):
    def __init__(self, dim, heads, mlp_mult):
        super().__init__()
        self.attn_norm = nn.RMSNorm(dim)
        self.c_q = nn.Linear(dim, dim, bias=False)
        self.c_k = nn.Linear(dim, dim // 2, bias=False)
        self.c_v = nn.Linear(dim, dim // 2, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)
        self.fc = nn.Linear(dim, int(mlp_mult * dim), bias=False)
        self.mlp_proj = nn.Linear(int(mlp_mult * dim), dim, bias=False)
        self.attn_scale = nn.Parameter(torch.ones(dim))
        self.heads = heads

    def forward(self, x, x0):
        h = self.attn_norm(x)
        q, k, v = self.c_q(h), self.c_k(h), self.c_v(h)
        B, T, D = q.shape
        q = q.view(B, T, self.heads, -1).transpose(1, 2)
        k = k.view(B, T, self.heads // 2, -1).transpose(1, 2).repeat_interleave(2, dim=1)
        v = v.view(B, T, self.heads // 2, -1).transpose(1, 2).repeat_interleave(2, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.attn_scale * self.proj(y.transpose(1, 2).reshape(B, T, D))
        return x + self.mlp_proj(F.leaky_relu(self.fc(x), 0.5).square())


def quantize_int6_{i}(w, clip_pcts=(0.999, 0.9995, 0.9999, 1.0)):
    best, best_err = None, float("inf")
    for pct in clip_pcts:
        clip = torch.quantile(w.abs().float(), pct, dim=1) if pct < 1.0 else w.abs().amax(dim=1)
        scale = (clip / 31).clamp_min(1.0 / 31)
        q = torch.clamp(torch.round(w / scale[:, None]), -31, 31).to(torch.int8)
        err = (q.float() * scale[:, None] - w).pow(2).mean().item()
        if err < best_err:
            best, best_err = (q, scale.half()), err
    return best


def newton_schulz_{i}(G, steps=5, eps=1e-7):
    a, b, c = (3.4445, -4.7750, 2.0315)
    X = G.bfloat16() / (G.norm() + eps)
    if G.size(0) > G.size(1):
        X = X.T
    for _ in range(steps):
        A = X @ X.T
        B = b * A + c * A @ A
        X = a * X + B @ X
    return X.T if G.size(0) > G.size(1) else X
"""

TAIL = """

def eval_val(args, model, val_tokens):
    seq_len = args.train_seq_len
    loss_sum = torch.zeros((), dtype=torch.float64)
    token_count = 0
    model.eval()
    with torch.inference_mode():
        for s in range(0, val_tokens.numel() - 1 - seq_len, seq_len):
            x = val_tokens[s:s + seq_len].long()[None]
            y = val_tokens[s + 1:s + seq_len + 1].long()[None]
            loss = model(x, y)
            loss_sum += loss.double() * y.numel()
            token_count += y.numel()
    return float(loss_sum / token_count)


def eval_val_sliding(args, model, val_tokens):
    seq_len, stride = args.train_seq_len, args.eval_stride
    total = val_tokens.numel() - 1
    loss_sum = torch.zeros((), dtype=torch.float64)
    with torch.inference_mode():
        for ws in range(0, total - seq_len, stride):
            x = val_tokens[ws:ws + seq_len].long()[None]
            y = val_tokens[ws + 1:ws + seq_len + 1].long()[None]
            s = 0 if ws == 0 else seq_len - stride
            nll = F.cross_entropy(model.forward_logits(x)[0, s:], y[0, s:], reduction="none")
            loss_sum += nll.double().sum()
    return loss_sum


def eval_val_ttt(args, model, val_tokens):
    opt = torch.optim.SGD(model.parameters(), lr=args.ttt_lr, momentum=0.9)
    loss_sum = torch.zeros((), dtype=torch.float64)
    n_chunks = (val_tokens.numel() - 1) // args.ttt_chunk_tokens
    for ci in range(n_chunks):
        start = ci * args.ttt_chunk_tokens
        chunk = val_tokens[start:start + args.ttt_chunk_tokens + 1].long()
        x, y = chunk[:-1][None], chunk[1:][None]
        with torch.no_grad():
            loss_sum += model(x, y).double() * y.numel()
        if ci == n_chunks - 1:
            break
        for epoch in range(args.ttt_epochs):
            opt.zero_grad()
            loss = model(x, y)
            loss.backward()
            opt.step()
    return loss_sum


def main():
    args = Hyperparameters()
    code = Path(__file__).read_text(encoding="utf-8")
    model = nn.Sequential(*[Block0(512, 8, 3.0) for _ in range(11)])
    opt = torch.optim.AdamW(model.parameters(), lr=0.02)
    train_stream = TokenStream(args.train_files)
    t0 = time.perf_counter()
    for step in range(args.iterations):
        x = train_stream.take(args.train_seq_len + 1).long()
        loss = model(x[:-1][None], x[1:][None])
        loss.backward()
        opt.step()
        opt.zero_grad()
        if time.perf_counter() - t0 > 600:
            break
    val_tokens = load_validation_tokens(args.val_files, args.train_seq_len)
    blob = lzma.compress(io.BytesIO().getvalue())
    print(f"Serialized model int6+lzma: {len(blob)} bytes")
    print(f"Code size: {len(code.encode())} bytes")
    eval_val(args, model, val_tokens)
    eval_val_sliding(args, model, val_tokens)
    if args.ttt_enabled:
        eval_val_ttt(args, model, val_tokens)


if __name__ == "__main__":
    main()
"""


def make_script(target_kb: int, rng: random.Random) -> str:
    extra = "\n".join(f'    knob_{j} = float(os.environ.get("KNOB_{j}", {rng.random():.4f}))' for j in range(40))
    parts = [HEADER.replace("{extra_hp}", extra)]
    i = 0
    while sum(len(p) for p in parts) + len(TAIL) < target_kb * 1024:
        parts.append(BLOCK.replace("{i}", str(i)))
        i += 1
    parts.append(TAIL)
    return "".join(parts)


def wrap(code: str) -> str:
    raw = lzma.compress(code.encode(), format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2}])
    return (
        'import lzma as L,base64 as B\nexec(L.decompress(B.b85decode("%s"),format=L.FORMAT_RAW,'
        'filters=[{"id":L.FILTER_LZMA2}]))\n' % base64.b85encode(raw).decode()
    )


def make_log(code: str, seed: int, code_bytes: int, rng: random.Random) -> str:
    lines = [code, "=" * 100, f"seed:{seed}"]
    for step in range(0, 7001, 250):
        lines.append(f"step:{step}/20000 train_loss:{3 - step / 7000:.4f} train_time:{step * 84}ms step_avg:84.00ms")
    lines.append("stopping_early: wallclock_cap train_time:599950ms step:7140/20000")
    model = rng.randint(15_500_000, 15_850_000)
    lines += [
        f"Serialized model int6+lzma: {model} bytes",
        f"Code size: {code_bytes} bytes",
        f"Total submission size int6+lzma: {model + code_bytes} bytes",
        "final_int6_roundtrip val_loss:1.9300 val_bpb:1.1430 eval_time:6600ms",
        "final_int6_sliding_window val_loss:1.8960 val_bpb:1.1229 stride:64 eval_time:74000ms",
        "final_int6_sliding_window_exact val_loss:1.89600000 val_bpb:1.12290000",
    ]
    return "\n".join(lines) + "\n"


def generate(tree: Path, folders: int, max_kb: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    for k in range(folders):
        d = tree / "records" / "track_10min_16mb" / f"2026-03-{k:02d}_Bench{k}"
        d.mkdir(parents=True)
        kb = max_kb if k % 5 == 0 else rng.randint(20, max_kb)
        code = make_script(kb, rng)
        shipped = wrap(code) if k % 4 == 3 else code
        (d / "train_gpt.py").write_text(shipped)
        nbytes = len(shipped.encode())
        (d / "README.md").write_text(
            f"# Bench {k}\n\n```\nSEED=1337 torchrun --standalone --nproc_per_node=8 train_gpt.py\n```\n"
        )
        for s in (1337, 42, 2025):
            (d / f"train_seed{s}.log").write_text(make_log(shipped, s, nbytes, rng))
        (d / "submission.json").write_text(
            json.dumps({"name": f"Bench {k}", "github_id": "bench", "val_bpb": 1.1229, "track": "10min_16mb"})
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tree", nargs="?")
    ap.add_argument("--folders", type=int, default=60)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--max-kb", type=int, default=160)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(a.tree) if a.tree else Path(tmp)
        if not a.tree:
            generate(tree, a.folders, a.max_kb)
        sizes = sorted(p.stat().st_size for p in tree.rglob("train_gpt.py"))
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        p = subprocess.run(
            [
                sys.executable,
                "-m",
                "pgolf",
                "audit",
                "--format",
                "json",
                "--no-progress",
                "--jobs",
                str(a.jobs),
                str(tree),
            ],
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        wall = time.perf_counter() - t0
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
        load = os.getloadavg()[0]
        if p.returncode == 2:
            print(p.stderr, file=sys.stderr)
            return 2
        doc = json.loads(p.stdout)
        per = [s["metrics"].get("seconds", 0.0) for s in doc["submissions"]]
        verdicts = {}
        for s in doc["submissions"]:
            verdicts[s["verdict"]] = verdicts.get(s["verdict"], 0) + 1
        print(f"submissions: {len(per)}  train_gpt.py sizes: {sizes[0]}..{sizes[-1]} bytes  jobs: {a.jobs}")
        print(f"wall: {wall:.1f} s  per submission: median {statistics.median(per):.2f} s, max {max(per):.2f} s")
        print(
            f"CPU time of the audit (all workers): {cpu:.1f} s -> {cpu / a.jobs:.1f} s per core for {a.jobs} jobs; "
            f"load average at the end: {load:.2f}"
        )
        print(f"verdicts: {verdicts}")
        for sub in doc["submissions"]:
            if sub["verdict"] != "pass":
                f = next((f for f in sub["findings"] if f["level"] == "error"), None)
                print(
                    f"  {sub['verdict']}: {Path(sub['path']).name}: {f['rule'] + ' ' + f['message'][:140] if f else ''}"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
