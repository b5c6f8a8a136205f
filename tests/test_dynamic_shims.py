"""The CPU shims in a child interpreter: CUDA-only idioms of the records run unchanged on CPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SHIMS = Path(__file__).resolve().parents[1] / "auditor" / "dynamic" / "shims"

PROG = r'''
import torch, torch.nn.functional as F, torch.distributed as dist
from torch.nn.attention import sdpa_kernel, SDPBackend
from flash_attn_interface import flash_attn_func, flash_attn_varlen_func
assert torch.cuda.is_available() and torch.cuda.device_count() == 1
device = torch.device("cuda", 0)
torch.cuda.set_device(device)
dist.init_process_group(backend="nccl", device_id=device)
assert dist.is_initialized() and dist.get_world_size() == 1 and dist.get_rank() == 0
x = torch.randn(2, 8, 4, 16, device=device).cuda(non_blocking=True)
k = torch.randn(2, 8, 2, 16).to("cuda:0", non_blocking=True)
assert x.device.type == "cpu" and k.device.type == "cpu"
out = flash_attn_func(x, k, k, causal=True)
ref = F.scaled_dot_product_attention(x.transpose(1, 2), k.repeat_interleave(2, 2).transpose(1, 2),
                                     k.repeat_interleave(2, 2).transpose(1, 2), is_causal=True).transpose(1, 2)
assert out.shape == x.shape and torch.allclose(out, ref, atol=1e-5)
y, lse = flash_attn_func(x, k, k, causal=True)  # FlashAttention 3 builds that return (out, softmax_lse)
assert torch.equal(y, out) and type(y) is torch.Tensor and lse.shape == (2, 4, 8)
assert type(out.transpose(1, 2) * 2) is torch.Tensor
cu = torch.tensor([0, 3, 8], dtype=torch.int32)
v = flash_attn_varlen_func(x[0], k[0], k[0], cu, cu, 5, 5, causal=True)
assert torch.allclose(v[3:], flash_attn_func(x[:1, 3:], k[:1, 3:], k[:1, 3:], causal=True)[0], atol=1e-5)
t = torch.ones(4, device="cuda")
dist.all_reduce(t)
assert t.sum().item() == 4
# every collective of a one-rank group: gather/scatter/all_to_all as records use them to collect per-rank scores
bufs = [torch.zeros(4)]
dist.gather(t * 2, bufs, dst=0)
assert bufs[0].sum().item() == 8
dist.scatter(t, [torch.full((4,), 3.0)], src=0)
assert t.sum().item() == 12
outs = [torch.zeros(4)]
dist.all_to_all(outs, [t.clone()])
assert torch.equal(outs[0], t)
objs = [None]
dist.gather_object({"n": 1}, objs, dst=0)
assert objs == [{"n": 1}]
single = torch.zeros(4)
dist.all_to_all_single(single, t)
assert torch.equal(single, t)
model = torch.compile(torch.nn.Linear(16, 16).to(device))
with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
    y = model(torch.randn(3, 16, device="cuda"))
assert y.dtype == torch.bfloat16
with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
    F.scaled_dot_product_attention(x, x, x, is_causal=True)
s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
s.record(); e.record(); torch.cuda.synchronize()
assert s.elapsed_time(e) >= 0
g = torch.Generator(device="cuda")
g.manual_seed(1)
assert torch.rand(2, generator=g).device.type == "cpu"
torch.set_default_device("cuda")
assert torch.zeros(1).device.type == "cpu"
torch.set_default_device("cpu")
from concurrent.futures import ThreadPoolExecutor  # loader threads prefetch pinned CUDA batches
fut = ThreadPoolExecutor(1).submit(lambda: torch.empty(4, dtype=torch.int64, pin_memory=True).to("cuda:0"))
assert fut.result().device.type == "cpu"
print("SHIMS_OK", torch.cuda.max_memory_allocated())
'''


def test_shims_run_cuda_idioms_on_cpu(tmp_path):
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(SHIMS), "PGOLF_DYNAMIC_CHILD": "1",
           "OMP_NUM_THREADS": "1", "HOME": str(tmp_path), "PGOLF_SANDBOX_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", PROG], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert "SHIMS_OK 0" in out.stdout, out.stderr[-2000:]


def test_shims_inactive_outside_the_child(tmp_path):
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(SHIMS), "HOME": str(tmp_path)}
    code = "import sys; print('pgolf_shims' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False False", out.stderr


def test_cli_dynamic_only_reports_and_fails(tmp_path):
    """`pgolf audit --dynamic-only` adds the dynamic findings to the report with the usual exit codes."""
    import json

    repo = SHIMS.parents[2]
    env = dict(os.environ, PGOLF_CACHE_DIR=str(tmp_path / "cache"))
    fix = repo / "tests" / "fixtures" / "dynamic" / "pre_eval_ttt"
    out = subprocess.run([sys.executable, "-m", "pgolf", "audit", str(fix), "--dynamic-only", "--timeout", "240",
                          "--format", "json"], cwd=repo, env=env, capture_output=True, text=True, timeout=400)
    assert out.returncode == 1, out.stderr[-2000:]
    sub = json.loads(out.stdout)["submissions"][0]
    rules = {f["rule"] for f in sub["findings"]}
    assert "PG4D1" in rules and sub["verdict"] == "fail"
    assert sub["metrics"]["dynamic"]["ledger"]["tainted"] == 512

# the kernel shapes the records launch: masked elementwise, a row-wise online-softmax cross-entropy over a bf16 row,
# a persistent tensor-descriptor matmul with reshape/permute/split, autotune; a kernel using what the interpreter
# lacks (inline PTX) is "needs a GPU", naming the kernel
PROG_TRITON = r'''
import torch, torch._dynamo
torch._dynamo.reset()  # torch's own triton paths see no triton (records call this between compiles)
import triton, triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

@triton.jit
def _lrelu_sq(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
    pid = tl.program_id(axis=0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    x = tl.load(x_ptr + offs, mask=m, other=0.0)
    y = tl.where(x > 0, x, 0.5 * x)
    tl.store(y_ptr + offs, y * y, mask=m)

x = torch.randn(1000)
y = torch.empty_like(x)
grid = lambda meta: (triton.cdiv(x.numel(), meta["BLOCK"]),)
_lrelu_sq[grid](x, y, x.numel(), BLOCK=256, num_warps=4)
assert torch.allclose(y, torch.where(x > 0, x, 0.5 * x) ** 2)

@triton.jit
def _ce_fwd(logits_ptr, losses_ptr, targets_ptr, stride_n, stride_v, n_cols, block_size: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    rp = logits_ptr + row * stride_n
    max_val = -float("inf")
    sum_exp = 0.0
    for off in range(0, n_cols, block_size):
        cols = off + tl.arange(0, block_size)
        mask = cols < n_cols
        z = tl.load(rp + cols * stride_v, mask=mask, other=-float("inf")).to(tl.float32)
        new_max = tl.maximum(max_val, tl.max(z, axis=0))
        sum_exp = sum_exp * tl.exp(max_val - new_max) + tl.sum(tl.exp(z - new_max), axis=0)
        max_val = new_max
    lse = max_val + tl.log(sum_exp)
    t = tl.load(targets_ptr + row).to(tl.int32)
    tl.store(losses_ptr + row, lse - tl.load(rp + t * stride_v).to(tl.float32))

lg = torch.randn(7, 300, dtype=torch.bfloat16)
tg = torch.randint(0, 300, (7,))
ls = torch.empty(7)
_ce_fwd[(7,)](lg, ls, tg, lg.stride(0), lg.stride(1), 300, block_size=128)
assert torch.allclose(ls, torch.nn.functional.cross_entropy(lg.float(), tg, reduction="none"), atol=1e-4), ls

@triton.jit
def _mm(a_desc, b_desc, c_desc, M, N, K, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, NUM_SMS: tl.constexpr):
    start = tl.program_id(axis=0)
    npn = tl.cdiv(N, BN)
    tiles = tl.cdiv(M, BM) * npn
    for tile in tl.range(start, tiles, NUM_SMS, flatten=True):
        om, on = (tile // npn) * BM, (tile % npn) * BN
        acc = tl.zeros((BM, BN), dtype=tl.float32)
        for ki in range(tl.cdiv(K, BK)):
            acc = tl.dot(a_desc.load([om, ki * BK]), b_desc.load([on, ki * BK]).T, acc)
        acc = tl.permute(tl.reshape(acc, (BM, 2, BN // 2)), (0, 2, 1))
        c0, c1 = tl.split(acc)
        c_desc.store([om, on], c0.to(tl.bfloat16))
        c_desc.store([om, on + BN // 2], c1.to(tl.bfloat16))

a, b = torch.randn(70, 40, dtype=torch.bfloat16), torch.randn(50, 40, dtype=torch.bfloat16)
c = torch.empty(70, 50, dtype=torch.bfloat16)
ad, bd = TensorDescriptor.from_tensor(a, [32, 16]), TensorDescriptor.from_tensor(b, [32, 16])
cd = TensorDescriptor.from_tensor(c, [32, 16])
_mm[lambda m: (min(4, triton.cdiv(70, 32) * triton.cdiv(50, 32)),)](ad, bd, cd, 70, 50, 40, BM=32, BN=32, BK=16, NUM_SMS=4)
ref = a.float() @ b.float().T
assert torch.allclose(c.float(), ref, atol=0.1, rtol=0.02), (c.float() - ref).abs().max()

@triton.autotune(configs=[triton.Config({"BLOCK": 64}, num_warps=4)], key=["n"])
@triton.jit
def _scale(x_ptr, n, s, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(x_ptr + offs, tl.load(x_ptr + offs, mask=offs < n) * s, mask=offs < n)

z = torch.ones(100)
_scale[lambda m: (triton.cdiv(100, m["BLOCK"]),)](z, 100, 3.0)
assert torch.all(z == 3.0)

@triton.jit
def _bad(x_ptr):
    tl.inline_asm_elementwise("mov.b32 $0, $1;", "=r,r", [tl.load(x_ptr)], dtype=tl.int32, is_pure=True, pack=1)

try:
    _bad[(1,)](z)
    raise SystemExit("no error")
except triton.PgolfNeedsGPU as e:
    assert "_bad" in str(e) and "needs a GPU" in str(e), e
print("TRITON_OK")
'''

PROG_MODES = r'''
import torch
w = torch.nn.Parameter(torch.ones(3))
with torch.inference_mode():  # a cache filled while scoring ...
    cache = torch.arange(3.0) * 2
(cache * w).sum().backward()  # ... reused by test-time training (eager CPU would raise without the shim)
assert w.grad.tolist() == [0.0, 2.0, 4.0]

@torch.inference_mode()
def score(x):
    return x * 2

assert not score(w).requires_grad

@torch.inference_mode
def score_bare(x):
    return x * 2

assert not score_bare(w).requires_grad
opt = torch.optim.AdamW([w], lr=0.1, fused=True)  # fused optimizers run on CPU as they are
opt.step()
import subprocess  # the minifier records run for their code-size line answers in-process (no process)
src = b"def f(a):\n    x = 1\n    return a + x\n"
out = subprocess.run(["pyminify", "--no-rename-locals", "-"], input=src, capture_output=True, check=True).stdout
assert isinstance(out, bytes) and len(out) < len(src) and b"return" in out
import pgolf_guard
assert [v["detail"] for v in pgolf_guard.STATE["violations"]] == ["pyminify (in-process)"]
print("MODES_OK")
'''


def _child(prog: str, tmp_path) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(SHIMS), "PGOLF_DYNAMIC_CHILD": "1",
           "OMP_NUM_THREADS": "1", "HOME": str(tmp_path), "PGOLF_SANDBOX_DIR": str(tmp_path)}
    return subprocess.run([sys.executable, "-c", prog], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)


def test_triton_shim_interprets_record_kernels_on_cpu(tmp_path):
    out = _child(PROG_TRITON, tmp_path)
    assert "TRITON_OK" in out.stdout, out.stderr[-2000:]


def test_inference_mode_and_fused_optimizers(tmp_path):
    out = _child(PROG_MODES, tmp_path)
    assert "MODES_OK" in out.stdout, out.stderr[-2000:]


# the ledger's semantics on the evaluation shapes of real records, driven directly (no harness): what reaches the
# metric is counted, restored weights are clean, training before scoring is caught
PROG_LEDGER = r'''
import copy, numpy as np, torch, torch.nn.functional as F
import pgolf_probe as P

V, T = 1024, 16
rng = np.random.default_rng(0)
val = rng.integers(4, V, size=8 * T + 1)
vt = torch.from_numpy(val)

def fresh():  # each scenario: a new run of the ledger and a new model, after one plain evaluation sweep
    global model
    P.begin_run(val, V)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(V, 8), torch.nn.Linear(8, V))
    sweep()

def loss(x, y, reduction="mean", m=None):
    return F.cross_entropy((m or model)(x).reshape(-1, V), y.reshape(-1), reduction=reduction)

def sweep():  # plain no-grad evaluation over non-overlapping windows
    with torch.no_grad():
        for s in range(0, 8 * T, T):
            loss(vt[s:s + T][None], vt[s + 1:s + T + 1][None], "none")

# (a) LoRA-style score-then-adapt over a batch of two documents: chunk 0 of each is scored by the grad forward the
# loss is taken from, then trained; the next no-grad forward covers chunk 0 (context) + chunk 1 (new)
fresh()
docs = [0, 4 * T]
x0 = torch.stack([vt[d:d + T] for d in docs]); y0 = torch.stack([vt[d + 1:d + T + 1] for d in docs])
opt = torch.optim.Adam(model.parameters(), lr=0.1)
opt.zero_grad(); loss(x0, y0).backward(); opt.step()
x1 = torch.stack([vt[d:d + 2 * T] for d in docs]); y1 = torch.stack([vt[d + 1:d + 2 * T + 1] for d in docs])
with torch.no_grad():
    loss(x1, y1, "none")
assert P.R["tainted"] == 0 and P.R["val_train_backwards"] == 1, ("lora", P.R["tainted"])
# (b) context-only adaptation with the weights restored after each window, evaluated twice
fresh()
snapshot = copy.deepcopy(model.state_dict())
for _ in range(2):
    for s in range(0, 6 * T, T // 2):
        if s:
            o = torch.optim.SGD(model.parameters(), lr=0.5)
            o.zero_grad(); loss(vt[s:s + T // 2][None], vt[s + 1:s + T // 2 + 1][None]).backward(); o.step()
        with torch.no_grad():
            loss(vt[s:s + T][None], vt[s + 1:s + T + 1][None], "none")
        model.load_state_dict(snapshot)
assert P.R["tainted"] == 0 and P.R["val_train_backwards"] > 0, ("restored", P.R["tainted"])
# ... the same without restoring: the second evaluation scores what the first trained on
fresh()
for _ in range(2):
    for s in range(0, 6 * T, T // 2):
        if s:
            o = torch.optim.SGD(model.parameters(), lr=0.5)
            o.zero_grad(); loss(vt[s:s + T // 2][None], vt[s + 1:s + T // 2 + 1][None]).backward(); o.step()
        with torch.no_grad():
            loss(vt[s:s + T][None], vt[s + 1:s + T + 1][None], "none")
assert P.R["tainted"] > 0, "not restored"
# (c) a throw-away adapted copy, freed, then the original scores: clean
fresh()
tmp = copy.deepcopy(model)
o = torch.optim.SGD(tmp.parameters(), lr=0.5)
o.zero_grad(); loss(vt[:T][None], vt[1:T + 1][None], m=tmp).backward(); o.step()
del tmp, o
sweep()
assert P.R["tainted"] == 0, ("copy", P.R["tainted"])
# (d) pre-evaluation TTT on the validation stream, then the scored sweep: every trained position is tainted
fresh()
o = torch.optim.SGD(model.parameters(), lr=0.5)
o.zero_grad(); loss(vt[:8 * T][None], vt[1:8 * T + 1][None]).backward(); o.step()
sweep()
assert P.R["tainted"] == 8 * T, ("pre-eval", P.R["tainted"])
print("LEDGER_OK")
'''


def test_ledger_counts_what_reaches_the_metric(tmp_path):
    out = _child(PROG_LEDGER, tmp_path)
    assert "LEDGER_OK" in out.stdout, out.stderr[-2000:]
