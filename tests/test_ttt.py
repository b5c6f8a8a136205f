"""trainer.ttt: legal score-first test-time training.

The legality tests run TTT twice on streams that differ only after some point and compare what was recorded
(bit-exact on CPU): nothing scored before the change may move, while chunks after it must.
"""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_evaluate import (
    TinyLM,
    collect_sink,
    ctx_of,
    make_h,
    per_rank_sums,
    random_stream,
    sink_arrays,
    synthetic_lut,
    tiny_gpt,
)

from trainer.config import Hyperparameters
from trainer.distributed import DistContext, init_distributed, shutdown
from trainer.errors import PgolfError
from trainer.evaluate import eval_full, eval_sliding
from trainer.ttt import eval_ttt, ttt_chunk_lr


# Tiny tensors: one intra-op thread avoids OpenMP spin-waits on the shared 2-core machine.
pytestmark = pytest.mark.usefixtures("single_torch_thread")


CHUNK = 256
# sliding windows of 64 every 24 tokens: 24 does not divide the chunk, so windows straddle chunk boundaries
TTT = dict(eval_stride=24, ttt_chunk_tokens=CHUNK, ttt_epochs=2, ttt_batch_seqs=2, ttt_lr=0.05, ttt_momentum=0.9,
           ttt_grad_clip=1.0, ttt_cosine=1)


def run_ttt(stream, model=None, log=None, **kw):
    model = TinyLM() if model is None else model
    rec, sink = collect_sink()
    loss, bpb = eval_ttt(model, stream, synthetic_lut(), make_h(**dict(TTT, **kw)), ctx_of(), log, nll_sink=sink)
    pos, nll = sink_arrays(rec)
    order = np.argsort(pos, kind="stable")
    return dict(loss=loss, bpb=bpb, pos=pos[order], nll=nll[order], model=model)


def weights(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def changed(a: dict, b: dict) -> set:
    return {k for k in a if not torch.equal(a[k], b[k])}


@pytest.mark.parametrize("q", [3 * CHUNK + 1, 2 * CHUNK + CHUNK // 2 + 7, 2 * CHUNK + 3])
def test_scores_never_see_later_tokens(q):
    """Legality: the NLL recorded for target token p is a function of tokens[0..p] only. Streams that differ from
    token q on must record bit-identical NLLs before q, whether q sits on a chunk boundary (the end of chunk 2) or
    inside a chunk (which catches training on a chunk before scoring it, or on the next chunk)."""
    n = 6 * CHUNK + 40
    a = random_stream(n, seed=1)
    b = a.clone()
    b[q:] = random_stream(n - q, seed=2)
    ra, rb = run_ttt(a), run_ttt(b)
    assert np.array_equal(ra["pos"], np.arange(1, n)) and np.array_equal(rb["pos"], np.arange(1, n))
    early = ra["pos"] < q
    assert np.array_equal(ra["nll"][early], rb["nll"][early])  # bit-exact
    assert not np.array_equal(ra["nll"][~early], rb["nll"][~early])


def test_training_on_a_chunk_moves_only_later_scores():
    """Change the first half of chunk 2: chunks 0-1 stay bit-exact; chunk 3 targets whose whole window context is
    unchanged still score differently, because the weights were trained on chunk 2 after it was scored."""
    n = 5 * CHUNK + 1
    a = random_stream(n, seed=4)
    b = a.clone()
    lo, hi = 2 * CHUNK + 1, 2 * CHUNK + CHUNK // 2
    b[lo:hi] = random_stream(hi - lo, seed=5)
    ra, rb = run_ttt(a), run_ttt(b)
    before = ra["pos"] < lo
    assert np.array_equal(ra["nll"][before], rb["nll"][before])
    # targets of chunk 3 see at most 64 tokens back, all after the changed span
    clean = (ra["pos"] > 3 * CHUNK) & (ra["pos"] <= 4 * CHUNK)
    assert not np.array_equal(ra["nll"][clean], rb["nll"][clean])
    # without training the same targets are identical: the difference above is the chunk-2 update
    e0a, e0b = run_ttt(a, ttt_epochs=0), run_ttt(b, ttt_epochs=0)
    assert np.array_equal(e0a["nll"][clean], e0b["nll"][clean])


def test_last_chunk_is_never_trained_on():
    n = 5 * CHUNK + 100
    a = random_stream(n, seed=6)
    last_start = (n - 1) // CHUNK * CHUNK  # first target index of the last chunk
    b = a.clone()
    b[last_start + 1:] = random_stream(n - last_start - 1, seed=7)
    c = a.clone()
    c[last_start - 50: last_start + 1] = random_stream(51, seed=8)  # inside the previous chunk's targets
    # constant LR: the cosine schedule reaches 0 at the last chunk and would hide training on it
    wa, wb, wc = (weights(run_ttt(s, ttt_cosine=0)["model"]) for s in (a, b, c))
    assert not changed(wa, wb)
    assert changed(wa, wc)


def test_ttt_adapts_and_beats_sliding_on_repetitive_stream():
    pattern = random_stream(29, seed=10)
    stream = pattern.repeat(60)[: 6 * CHUNK + 1]
    base = TinyLM()
    before = weights(base)
    _slide_loss, slide_bpb = eval_sliding(copy.deepcopy(base), stream, synthetic_lut(), make_h(**TTT), ctx_of())
    r = run_ttt(stream, model=base, ttt_optimizer="adamw", ttt_lr=0.02, ttt_cosine=0)
    assert changed(before, weights(base)) == set(before)  # every parameter moved
    assert r["bpb"] < 0.8 * slide_bpb
    first, last = r["pos"] <= CHUNK, r["pos"] > 5 * CHUNK
    assert r["nll"][last].mean() < 0.5 * r["nll"][first].mean()
    assert r["loss"] == pytest.approx(float(np.sum(r["nll"], dtype=np.float64)) / (stream.numel() - 1), rel=1e-9)


def test_zero_epochs_equals_sliding_and_full_window_eval():
    stream = random_stream(7 * 64 + 1, seed=12)
    model = TinyLM()
    before = weights(model)
    r = run_ttt(stream, model=model, ttt_epochs=0)
    assert not changed(before, weights(model))
    slide = eval_sliding(model, stream, synthetic_lut(), make_h(**TTT), ctx_of())
    assert r["loss"] == pytest.approx(slide[0], rel=1e-6) and r["bpb"] == pytest.approx(slide[1], rel=1e-6)
    full = eval_full(model, stream, synthetic_lut(), make_h(), ctx_of())
    r0 = run_ttt(stream, model=model, ttt_epochs=0, eval_stride=0)  # EVAL_STRIDE=0: non-overlapping windows
    assert r0["loss"] == pytest.approx(full[0], rel=1e-6) and r0["bpb"] == pytest.approx(full[1], rel=1e-6)


def test_freeze_blocks_and_embeddings():
    stream = random_stream(4 * CHUNK + 1, seed=13)
    model = TinyLM(n_blocks=3)
    model.head.weight.requires_grad_(False)  # a caller-frozen parameter must stay frozen and keep its flag
    before = weights(model)
    run_ttt(stream, model=model, ttt_freeze_blocks=2)
    moved = changed(before, weights(model))
    assert not any(k.startswith(("blocks.0.", "blocks.1.", "head.")) for k in moved)
    assert {k for k in before if k.startswith("blocks.2.")} <= moved and "tok_emb.weight" in moved
    assert not model.head.weight.requires_grad and model.tok_emb.weight.requires_grad
    assert all(p.grad is None for p in model.parameters())

    model = TinyLM(n_blocks=3)
    before = weights(model)
    run_ttt(stream, model=model, ttt_freeze_embed=1)
    moved = changed(before, weights(model))
    assert "tok_emb.weight" not in moved and "head.weight" in moved and "blocks.0.fc.weight" in moved


def test_ema_scoring_uses_averaged_weights():
    pattern = random_stream(29, seed=14)
    stream = pattern.repeat(50)[: 5 * CHUNK + 1]
    kw = dict(ttt_optimizer="adamw", ttt_lr=0.02, ttt_cosine=0)
    plain = run_ttt(stream, **kw)
    frozen_start = run_ttt(stream, ttt_epochs=0)
    # decay ~1: the EMA stays at the starting weights, so scores equal no-TTT scores although the weights train
    slow_model = TinyLM()
    before = weights(slow_model)
    slow = run_ttt(stream, model=slow_model, ttt_ema_decay=1 - 1e-9, **kw)
    assert changed(before, weights(slow_model))
    np.testing.assert_allclose(slow["nll"], frozen_start["nll"], rtol=1e-5, atol=1e-5)
    # a moderate decay scores between the two; chunk 0 is always scored with the starting weights
    mid = run_ttt(stream, ttt_ema_decay=0.5, **kw)
    assert plain["bpb"] < mid["bpb"] < frozen_start["bpb"]
    first = plain["pos"] <= CHUNK
    assert np.array_equal(mid["nll"][first], plain["nll"][first])


def test_progress_lines_follow_challenge_grammar():
    lines = []
    stream = random_stream(23 * 64 + 1, seed=15)
    r = run_ttt(stream, log=lines.append, ttt_chunk_tokens=64)
    n_chunks = 23
    assert re.fullmatch(rf"ttt_sliding:start chunks={n_chunks} chunk_tokens=64 total_windows=\d+ stride=24 "
                        r"ttt_lr=0.05 ttt_epochs=2 freeze_blocks=0", lines[0])
    assert re.fullmatch(r"ttt_sliding:params unfrozen=\d+ frozen=0", lines[1])
    chunk_re = re.compile(r"^\s+ttt_chunk \[(?P<ci>\d+)/(?P<n>\d+)\] bpb=(?P<bpb>[\d.]+) time=(?P<s>[\d.]+)s")
    progress = [chunk_re.match(ln) for ln in lines[2:-1]]
    assert all(progress) and [int(m["ci"]) for m in progress] == [1, 11, 21, 23]
    assert all(int(m["n"]) == n_chunks for m in progress)
    done_re = r"ttt_sliding:done val_loss=(?P<loss>[\d.]+) val_bpb=(?P<bpb>[\d.]+) elapsed=(?P<s>[\d.]+)s"
    done = re.fullmatch(done_re, lines[-1])
    assert done and float(done["bpb"]) == pytest.approx(r["bpb"], abs=1e-6)
    assert float(progress[-1]["bpb"]) == pytest.approx(r["bpb"], abs=1e-6)  # the last line covers every chunk


def test_scoring_rank_split_matches_single_process(monkeypatch):
    import trainer.evaluate as ev

    stream = random_stream(5 * CHUNK + 30, seed=16)
    model = TinyLM()
    h = make_h(**dict(TTT, ttt_epochs=0))
    one = per_rank_sums(monkeypatch, lambda c: eval_ttt(model, stream, synthetic_lut(), h, c), 1)
    three = per_rank_sums(monkeypatch, lambda c: eval_ttt(model, stream, synthetic_lut(), h, c), 3)
    assert ev.all_reduce_sum is not None
    assert one[1].item() == three[1].item() == stream.numel() - 1
    assert one[2].item() == three[2].item()
    assert three[0].item() == pytest.approx(one[0].item(), rel=1e-6)


def test_cosine_schedule_and_bad_settings():
    h = make_h(**TTT)
    assert ttt_chunk_lr(h, 0, 5) == pytest.approx(0.05)
    assert ttt_chunk_lr(h, 2, 5) == pytest.approx(0.025)
    assert ttt_chunk_lr(h, 4, 5) == pytest.approx(0.0, abs=1e-12)
    assert ttt_chunk_lr(make_h(**dict(TTT, ttt_cosine=0)), 4, 5) == pytest.approx(0.05)
    stream = random_stream(3 * CHUNK, seed=17)
    for kw, msg in [(dict(ttt_chunk_tokens=0), "TTT_CHUNK_TOKENS"), (dict(ttt_ema_decay=1.0), "TTT_EMA_DECAY"),
                    (dict(ttt_freeze_blocks=5), "TTT_FREEZE_BLOCKS"), (dict(eval_stride=65), "EVAL_STRIDE")]:
        with pytest.raises(PgolfError, match=msg):
            eval_ttt(TinyLM(), stream, synthetic_lut(), make_h(**dict(TTT, **kw)), ctx_of())


# ---------------------------------------------------------------------------------------------------------------
# the real GPT at a tiny size


def gpt_ttt_h(h, **kw):
    return Hyperparameters.resolve(preset=dict(h.to_dict(), **kw), env={})


def test_real_gpt_ttt_order_and_adaptation():
    model, h = tiny_gpt(param_banks=1, eval_batch_seqs=4)
    seq_len = h.eval_len  # 128, stride 32
    hh = gpt_ttt_h(h, ttt_chunk_tokens=2 * seq_len, ttt_epochs=1, ttt_batch_seqs=2, ttt_lr=0.05, ttt_freeze_blocks=1,
                   ttt_ema_decay=0.5)
    pattern = random_stream(41, seed=18, vocab=h.vocab_size)
    a = pattern.repeat(40)[: 5 * 2 * seq_len + 1]
    b = a.clone()
    b[3 * 2 * seq_len + 1:] = random_stream(a.numel() - 3 * 2 * seq_len - 1, seed=19, vocab=h.vocab_size)
    lut = synthetic_lut(h.vocab_size)
    runs = []
    for stream in (a, b):
        m = copy.deepcopy(model)
        before = {k: v.clone() for k, v in m.export_state_dict().items()}
        slide = eval_sliding(m, stream, lut, hh, ctx_of())  # inference-mode eval first, then TTT on the same model
        rec, sink = collect_sink()
        loss, bpb = eval_ttt(m, stream, lut, hh, ctx_of(), None, nll_sink=sink)
        pos, nll = sink_arrays(rec)
        order = np.argsort(pos, kind="stable")
        runs.append((pos[order], nll[order], slide, bpb, before, m.export_state_dict()))
    (pa, na, slide, bpb, before, after), (pb, nb, *_rest) = runs
    assert np.array_equal(pa, np.arange(1, a.numel())) and np.array_equal(pb, pa)
    early = pa <= 3 * 2 * seq_len
    assert np.array_equal(na[early], nb[early])
    assert not np.array_equal(na[~early], nb[~early])
    assert bpb < slide[1]
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert not any(k.startswith("blocks.0.") for k in moved)  # block 0 frozen, including its bank rows
    assert "blocks.1.attn.c_q.weight" in moved and "blocks.1.mlp.fc.weight" in moved and "tok_emb.weight" in moved


@pytest.mark.gpu
def test_cuda_ttt_covers_every_target_and_adapts():
    dev = torch.device("cuda")
    ctx = DistContext(0, 1, 0, dev, "")
    stream = random_stream(29, seed=22).repeat(60)[: 6 * CHUNK + 1]
    model = TinyLM().to(dev)
    h = make_h(**dict(TTT, ttt_optimizer="adamw", ttt_lr=0.02, ttt_cosine=0))
    slide = eval_sliding(model, stream, synthetic_lut(), h, ctx)
    rec, sink = collect_sink()
    _loss, bpb = eval_ttt(model, stream, synthetic_lut(), h, ctx, None, nll_sink=sink)
    pos, _nll = sink_arrays(rec)
    assert np.array_equal(np.sort(pos), np.arange(1, stream.numel()))
    assert bpb < 0.8 * slide[1]


# ---------------------------------------------------------------------------------------------------------------
# two gloo ranks under torchrun (this file is the worker script)

DIST_SCENARIOS = {
    "sgd_clip": dict(),
    "adamw_ema_freeze": dict(ttt_optimizer="adamw", ttt_lr=0.02, ttt_ema_decay=0.5, ttt_freeze_blocks=1),
    # one sequence per step: every other step one rank has no sequence and must still join the all-reduce
    "one_seq_steps": dict(ttt_batch_seqs=1, eval_stride=0, ttt_grad_clip=0.0),
}


def dist_stream() -> torch.Tensor:
    return random_stream(5 * CHUNK + 30, seed=20)


def run_dist_scenario(kw: dict, ctx) -> dict:
    model = TinyLM()
    loss, bpb = eval_ttt(model, dist_stream(), synthetic_lut(), make_h(**dict(TTT, **kw)), ctx)
    return {"loss": loss, "bpb": bpb, "weights": weights(model)}


def _ttt_worker(out_dir: str) -> None:
    torch.set_num_threads(1)
    ctx = init_distributed(make_h(device="cpu"))
    assert ctx.world_size == 2 and ctx.backend == "gloo"
    try:
        for name, kw in DIST_SCENARIOS.items():
            torch.save(run_dist_scenario(kw, ctx), os.path.join(out_dir, f"{name}.rank{ctx.rank}.pt"))
    finally:
        shutdown()


def test_two_gloo_ranks_match_single_process(tmp_path):
    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(repo) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(Path(__file__).resolve()), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    init = weights(TinyLM())
    for name, kw in DIST_SCENARIOS.items():
        ref = run_dist_scenario(kw, DistContext())
        r0, r1 = (torch.load(tmp_path / f"{name}.rank{r}.pt") for r in (0, 1))
        assert r0["loss"] == r1["loss"] and r0["bpb"] == r1["bpb"]  # all-reduced totals
        assert r0["loss"] == pytest.approx(ref["loss"], rel=1e-5) and r0["bpb"] == pytest.approx(ref["bpb"], rel=1e-5)
        for k, v in ref["weights"].items():
            assert torch.equal(r0["weights"][k], r1["weights"][k]), f"{name}: ranks disagree on {k}"
            assert torch.allclose(r0["weights"][k], v, rtol=1e-4, atol=1e-5), \
                f"{name}: {k} differs from one process by {(r0['weights'][k] - v).abs().max().item():.3g}"
        assert changed(init, ref["weights"])


if __name__ == "__main__":
    _ttt_worker(sys.argv[1])
