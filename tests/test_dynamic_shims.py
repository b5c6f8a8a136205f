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
cu = torch.tensor([0, 3, 8], dtype=torch.int32)
v = flash_attn_varlen_func(x[0], k[0], k[0], cu, cu, 5, 5, causal=True)
assert torch.allclose(v[3:], flash_attn_func(x[:1, 3:], k[:1, 3:], k[:1, 3:], causal=True)[0], atol=1e-5)
t = torch.ones(4, device="cuda")
dist.all_reduce(t)
assert t.sum().item() == 4
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
    out = subprocess.run([sys.executable, "-m", "trainer", "audit", str(fix), "--dynamic-only", "--timeout", "240",
                          "--format", "json"], cwd=repo, env=env, capture_output=True, text=True, timeout=400)
    assert out.returncode == 1, out.stderr[-2000:]
    sub = json.loads(out.stdout)["submissions"][0]
    rules = {f["rule"] for f in sub["findings"]}
    assert "PG4D1" in rules and sub["verdict"] == "fail"
    assert sub["metrics"]["dynamic"]["ledger"]["tainted"] == 512
