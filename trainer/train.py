"""The training pipeline: train under a wallclock cap, average, quantize and compress, reload the artifact and
score it (full, sliding-window, legal score-first TTT). This module is the entry point of a built train_gpt.py.
"""

from __future__ import annotations

import copy
import io
import json
import os
import sys
import time

import numpy as np
import torch

from trainer.artifact import artifact_label, artifact_size_bound, export_artifact, load_artifact
from trainer.bpb import build_byte_lut, load_tokenizer
from trainer.config import Hyperparameters
from trainer.distributed import all_reduce_sum, barrier, init_distributed, shutdown
from trainer.ema import WeightEMA, WeightSWA
from trainer.errors import PgolfError
from trainer.evaluate import eval_full, eval_sliding
from trainer.gptq import collect_hessians, generate_calibration
from trainer.loader import DistributedTokenLoader, load_validation_tokens
from trainer.model import GPT
from trainer.optim import build_optimizers, lr_scale
from trainer.qat import qat_clip_settings
from trainer.quantize import qat_bits_by_name
from trainer.runlog import RunLog, versions_info
from trainer.shards import shard_paths, shard_token_count, write_bytes_atomic
from trainer.ttt import eval_ttt


def write_json_atomic(path: str, payload: dict) -> None:
    write_bytes_atomic(path, (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode("utf-8"))


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def grad_accum_for(h: Hyperparameters, world_size: int) -> int:
    if h.grad_accum_steps > 0:
        return h.grad_accum_steps
    if 8 % world_size != 0:
        raise PgolfError(f"WORLD_SIZE={world_size} must divide 8 when GRAD_ACCUM_STEPS=0 (or set GRAD_ACCUM_STEPS)")
    return 8 // world_size


def check_batch_shape(h: Hyperparameters, world_size: int, grad_accum: int) -> None:
    per_micro = world_size * grad_accum * h.train_seq_len
    if h.train_batch_tokens <= 0 or h.train_batch_tokens % per_micro != 0:
        raise PgolfError(
            f"TRAIN_BATCH_TOKENS={h.train_batch_tokens} must be a positive multiple of world_size x grad_accum x "
            f"TRAIN_SEQ_LEN = {world_size} x {grad_accum} x {h.train_seq_len} = {per_micro}"
        )


class NonFiniteWatch:
    """Remembers the first step whose loss was NaN/inf without a host sync per step."""

    def __init__(self, device):
        self.first_bad = torch.full((), -1, dtype=torch.long, device=device)

    def observe(self, step: int, loss: torch.Tensor) -> None:
        bad = ~torch.isfinite(loss)
        self.first_bad = torch.where(bad & (self.first_bad < 0), torch.full_like(self.first_bad, step), self.first_bad)

    def check(self) -> None:
        step = int(self.first_bad.item())
        if step >= 0:
            raise PgolfError(f"training diverged: non-finite train loss at step {step}; lower the learning rates or enable GRAD_CLIP_NORM")


def metric_prefix(h: Hyperparameters) -> str:
    """`final_int8_zlib` for the baseline's int8+zlib, `final_int6_lzma` etc., as the records label their lines."""
    return "final_" + artifact_label(h).replace("+", "_").replace("-", "_")


def run(h: Hyperparameters, code_bytes: int = 0, log_console: bool = True, code_form: str | None = None) -> dict:
    """Train, export, reload and evaluate. Returns the metrics written to metrics.json.

    code_bytes: bytes of the train_gpt.py that will ship (reserved in the artifact budget); code_form: its form's
    name (`builder.ship`), recorded in metrics.json so `pgolf build` ships the same form."""
    ctx = init_distributed(h)
    run_id = h.run_id or f"run_seed{h.seed}"
    out_dir = h.out_dir or os.path.join("runs", run_id)
    os.makedirs(out_dir, exist_ok=True)
    log = RunLog(os.path.join(out_dir, "train.log"), ctx.is_main, console=log_console)
    try:
        return _run(h, ctx, log, out_dir, run_id, code_bytes, code_form)
    finally:
        log.close()
        shutdown()


def _run(h, ctx, log, out_dir, run_id, code_bytes, code_form=None) -> dict:
    device = ctx.device
    is_cuda = device.type == "cuda"
    log.header(h, str(device) + (f" ({torch.cuda.get_device_name(device)})" if is_cuda else ""), ctx.world_size)

    # ---- inputs (each failure is one clear line) ----
    train_files = shard_paths(h.data_path, "train")
    sp = load_tokenizer(h.tokenizer_path, h.vocab_size)
    lut = build_byte_lut(sp, h.vocab_size, device=device)
    val_tokens = load_validation_tokens(h.data_path, h.train_seq_len, h.val_max_tokens)
    grad_accum = grad_accum_for(h, ctx.world_size)
    check_batch_shape(h, ctx.world_size, grad_accum)
    log.log(f"val_bpb:enabled tokenizer_kind=sentencepiece tokenizer_path={h.tokenizer_path}")
    log.log(f"train_loader:dataset:{os.path.basename(os.path.normpath(h.data_path))} train_shards:{len(train_files)}")
    log.log(f"val_loader:shards pattern={os.path.join(h.data_path, 'fineweb_val_*.bin')} tokens:{val_tokens.numel() - 1}")

    # ---- model and optimizers ----
    seed_everything(h.seed)
    if is_cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    base_model = GPT(h).to(device)
    model = torch.compile(base_model, dynamic=False) if (is_cuda and h.compile) else base_model
    optimizers = build_optimizers(base_model, h, ctx)
    n_params = sum(p.numel() for p in base_model.parameters())
    log.log(f"model_params:{n_params}")
    bound = artifact_size_bound(h, {n: tuple(t.shape) for n, t in base_model.export_state_dict().items()}, code_bytes)
    log.log(
        f"artifact_bound: label:{artifact_label(h)} raw_bytes:{bound['raw_total']} worst_case_total:{bound['raw_bound_total']} "
        f"cap:{bound['cap']} fits_without_fitter:{int(bound['fits_without_fitter'])} fit_guaranteed:{int(bound['fit_guaranteed'])}"
    )
    log.log(f"world_size:{ctx.world_size} grad_accum_steps:{grad_accum}")
    log.log(
        f"train_batch_tokens:{h.train_batch_tokens} train_seq_len:{h.train_seq_len} iterations:{h.iterations} "
        f"warmup_steps:{h.warmup_steps} max_wallclock_seconds:{h.max_wallclock_seconds:.3f}"
    )
    log.log(f"seed:{h.seed}")
    autocast = torch.autocast(device_type="cuda", dtype=torch.bfloat16) if is_cuda else torch.autocast(device_type="cpu", enabled=False)

    def train_micro_steps(loader, step):
        total = torch.zeros((), device=device)
        for _ in range(grad_accum):
            x, y = loader.next_batch(h.train_batch_tokens, h.train_seq_len, grad_accum)
            with autocast:
                loss = model(x, y)
            (loss / grad_accum).backward()
            total += loss.detach()
        return total / grad_accum

    # ---- compile warm-up: run a few steps, then restore model, optimizer and data order ----
    if h.warmup_steps > 0:
        init_model = copy.deepcopy(base_model.state_dict())
        init_opt = copy.deepcopy(optimizers.state_dict())
        warm_loader = DistributedTokenLoader(h.data_path, ctx.rank, ctx.world_size, device)
        for ws in range(h.warmup_steps):
            optimizers.zero_grad()
            train_micro_steps(warm_loader, ws)
            optimizers.step(ws, 1.0)
            if ws + 1 == h.warmup_steps or (ws + 1) % 10 == 0:
                log.log(f"warmup_step:{ws + 1}/{h.warmup_steps}")
        base_model.load_state_dict(init_model)
        optimizers.load_state_dict(init_opt)
        optimizers.zero_grad()
        del init_model, init_opt, warm_loader

    # ---- training ----
    loader = DistributedTokenLoader(h.data_path, ctx.rank, ctx.world_size, device)
    ema = WeightEMA(base_model, h.ema_decay, warmup=bool(h.ema_warmup)) if h.ema_enabled else None
    swa = WeightSWA(base_model) if h.swa_enabled else None
    watch = NonFiniteWatch(device)
    qat_bits = qat_bits_by_name(base_model.export_state_dict().items(), h)  # export names (banks unbanked)
    qat_on = False

    def enable_qat(step, reason):
        nonlocal qat_on
        if qat_on:
            return
        base_model.set_qat(qat_bits, *qat_clip_settings(h))  # the exporter's exact clip rule
        qat_on = True
        if ema is not None and h.ema_reset_on_qat:
            ema.reset(base_model)
        log.log(f"qat:enabled step:{step} reason:{reason} tensors:{len(qat_bits)}")

    if h.qat_enabled:
        enable_qat(0, "QAT_ENABLED")
    reserve_s = h.gptq_reserve_seconds if (h.gptq_enabled and h.gptq_calib_source == "train") else 0.0
    budget_s = h.max_wallclock_seconds - reserve_s - h.post_qat_seconds if h.max_wallclock_seconds > 0 else 0.0
    if reserve_s or h.post_qat_seconds:
        log.log(f"budget:reserving gptq:{reserve_s:.1f}s post_qat:{h.post_qat_seconds:.1f}s effective={budget_s * 1000:.0f}ms")
    lr_h = h if budget_s == h.max_wallclock_seconds else _with_wallclock(h, budget_s)
    max_ms = budget_s * 1000.0
    train_time_ms = 0.0
    history = {"train": [], "val": []}
    stop_after = None
    step = 0
    if is_cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    while True:
        last = step == h.iterations or (stop_after is not None and step >= stop_after)
        if last or (h.val_loss_every > 0 and step % h.val_loss_every == 0):
            if is_cuda:
                torch.cuda.synchronize()
            train_time_ms += 1000.0 * (time.perf_counter() - t0)
            vl, vb = eval_full(base_model, val_tokens, lut, h, ctx)
            history["val"].append([step, vl, vb, train_time_ms])
            log.log(f"step:{step}/{h.iterations} val_loss:{vl:.4f} val_bpb:{vb:.4f} train_time:{train_time_ms:.0f}ms step_avg:{train_time_ms / max(step, 1):.2f}ms")
            if is_cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        if last:
            if stop_after is not None and step < h.iterations:
                log.log(f"stopping_early: wallclock_cap train_time:{train_time_ms:.0f}ms step:{step}/{h.iterations}")
            break
        elapsed_ms = train_time_ms + 1000.0 * (time.perf_counter() - t0)
        scale = lr_scale(step, elapsed_ms, lr_h)
        if not qat_on:
            if h.late_qat_threshold > 0 and scale < h.late_qat_threshold:
                enable_qat(step, f"lr_scale {scale:.4f} < LATE_QAT_THRESHOLD")
            elif h.qat_start_frac > 0 and _progress(step, elapsed_ms, h, max_ms) >= h.qat_start_frac:
                enable_qat(step, f"progress >= QAT_START_FRAC {h.qat_start_frac}")
        optimizers.zero_grad()
        train_loss = train_micro_steps(loader, step)
        watch.observe(step, train_loss)
        optimizers.step(step, scale)
        if ema is not None:
            ema.update(base_model)
        if swa is not None and scale < 0.2 and (step + 1) % h.swa_every == 0:
            swa.update(base_model)
        step += 1
        approx_ms = train_time_ms + 1000.0 * (time.perf_counter() - t0)
        if step <= 10 or step % max(h.train_log_every, 1) == 0 or step == h.iterations:
            # every rank logs the same number: the mean over ranks of their micro-batch losses
            tl = float(all_reduce_sum(train_loss.detach().clone()).item()) / ctx.world_size
            watch.check()
            history["train"].append([step, tl, approx_ms])
            log.log(f"step:{step}/{h.iterations} train_loss:{tl:.4f} train_time:{approx_ms:.0f}ms step_avg:{approx_ms / step:.2f}ms")
        if max_ms > 0 and stop_after is None:
            hit = approx_ms >= max_ms
            if ctx.world_size > 1:  # all ranks must stop at the same step; one host sync per step, as the records
                flag = torch.tensor(int(hit), device=device)
                torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
                hit = bool(flag.item())
            if hit:
                stop_after = step
    watch.check()
    steps_done = step

    # ---- optional post-training QAT phase (its seconds count against the training budget) ----
    if h.post_qat_seconds > 0:
        enable_qat(steps_done, "POST_QAT_SECONDS")
        t_q = time.perf_counter()
        n_q = 0
        while time.perf_counter() - t_q < h.post_qat_seconds:
            frac = (time.perf_counter() - t_q) / h.post_qat_seconds
            optimizers.zero_grad()
            loss = train_micro_steps(loader, steps_done + n_q)
            watch.observe(steps_done + n_q, loss)
            optimizers.step(steps_done + n_q, 0.1 * (1.0 - frac))
            if ema is not None:
                ema.update(base_model)
            n_q += 1
        watch.check()
        post_ms = 1000.0 * (time.perf_counter() - t_q)
        train_time_ms += post_ms
        log.log(f"post_qat:done steps:{n_q} time:{post_ms:.0f}ms")

    # ---- weight averaging ----
    if swa is not None and swa.count > 0:
        swa.copy_to(base_model)
        log.log(f"swa:applying SWA weights snapshots:{swa.count}")
    elif ema is not None:
        ema.copy_to(base_model)
        log.log("ema:applying EMA weights")
    if h.save_raw_model:
        raw_name = "final_model.pt" if ctx.world_size == 1 else f"final_model.rank{ctx.rank}.pt"
        raw = io.BytesIO()
        torch.save({k: v.detach().cpu() for k, v in base_model.export_state_dict().items()}, raw)
        write_bytes_atomic(os.path.join(out_dir, raw_name), raw.getvalue())
    t_pre = time.perf_counter()
    pre_loss, pre_bpb = eval_full(base_model, val_tokens, lut, h, ctx)
    log.log(f"DIAGNOSTIC post_ema val_loss:{pre_loss:.4f} val_bpb:{pre_bpb:.4f} eval_time:{1000 * (time.perf_counter() - t_pre):.0f}ms")
    if is_cuda:
        log.log(f"peak memory allocated: {torch.cuda.max_memory_allocated() // 2**20} MiB reserved: {torch.cuda.max_memory_reserved() // 2**20} MiB")

    # ---- calibration, quantization and serialization (count against the training budget) ----
    t_ser = time.perf_counter()
    hessians = None
    calib_ms = 0.0
    if h.gptq_enabled:
        t_c = time.perf_counter()
        per_rank = -(-h.gptq_calib_seqs // ctx.world_size)  # each rank calibrates on its share; Hessians are summed
        if h.gptq_calib_source == "train":
            calib_loader = DistributedTokenLoader(h.data_path, ctx.rank, ctx.world_size, device)
            batches = [calib_loader.next_batch(h.train_seq_len * ctx.world_size, h.train_seq_len, 1)[0] for _ in range(per_rank)]
        else:
            gen = torch.Generator(device="cpu").manual_seed(h.seed + 1 + ctx.rank)
            batches = list(generate_calibration(base_model, per_rank, h.train_seq_len, generator=gen, log=log.log).split(1))
        with autocast:
            hessians = collect_hessians(base_model, batches, all_reduce=all_reduce_sum, log=log.log)
        calib_ms = 1000.0 * (time.perf_counter() - t_c)
        log.log(f"gptq:calibration source:{h.gptq_calib_source} seqs:{h.gptq_calib_seqs} time:{calib_ms:.0f}ms")
    label = artifact_label(h)
    artifact_path = os.path.join(out_dir, "final_model.ptz")
    blob = None
    if ctx.is_main:
        blob, report = export_artifact(base_model.export_state_dict(), h, code_bytes, log.log, hessians=hessians)
        write_bytes_atomic(artifact_path, blob)
    barrier()
    serialize_ms = 1000.0 * (time.perf_counter() - t_ser)
    with open(artifact_path, "rb") as fh:
        blob = fh.read()
    model_bytes = len(blob)
    log.log(f"Serialized model {label}: {model_bytes} bytes")
    if code_form:
        log.log(f"code_form:{code_form}")
    log.log(f"Code size: {code_bytes} bytes")
    log.log(f"Total submission size {label}: {model_bytes + code_bytes} bytes")
    budget_ms = train_time_ms + serialize_ms
    log.log(f"timing:train_ms:{train_time_ms:.0f} calibration_ms:{calib_ms:.0f} serialize_ms:{serialize_ms - calib_ms:.0f} training_budget_ms:{budget_ms:.0f}/600000")

    # ---- evaluation of the reloaded artifact ----
    eval_model = GPT(h).to(device)
    eval_model.load_export_state_dict(load_artifact(blob))
    prefix = metric_prefix(h)
    t_eval = time.perf_counter()
    t1 = time.perf_counter()
    q_loss, q_bpb = eval_full(eval_model, val_tokens, lut, h, ctx)
    log.log(f"{prefix}_roundtrip val_loss:{q_loss:.4f} val_bpb:{q_bpb:.4f} eval_time:{1000 * (time.perf_counter() - t1):.0f}ms")
    log.log(f"{prefix}_roundtrip_exact val_loss:{q_loss:.8f} val_bpb:{q_bpb:.8f}")
    final_loss, final_bpb, final_label = q_loss, q_bpb, f"{prefix}_roundtrip"
    metrics = {"post_quant_val_loss": q_loss, "post_quant_val_bpb": q_bpb}
    full_val = None
    if h.eval_stride > 0 or h.ttt_enabled:
        full_val = load_validation_tokens(h.data_path, 1, h.val_max_tokens)
    if h.eval_stride > 0:
        t1 = time.perf_counter()
        s_loss, s_bpb = eval_sliding(eval_model, full_val, lut, h, ctx, log=log.log)
        log.log(f"{prefix}_sliding_window val_loss:{s_loss:.4f} val_bpb:{s_bpb:.4f} stride:{h.eval_stride} eval_time:{1000 * (time.perf_counter() - t1):.0f}ms")
        log.log(f"{prefix}_sliding_window_exact val_loss:{s_loss:.8f} val_bpb:{s_bpb:.8f}")
        final_loss, final_bpb, final_label = s_loss, s_bpb, f"{prefix}_sliding_window"
        metrics.update(sliding_val_loss=s_loss, sliding_val_bpb=s_bpb)
    if h.ttt_enabled:
        t1 = time.perf_counter()
        t_loss, t_bpb = eval_ttt(eval_model, full_val, lut, h, ctx, log.log)
        log.log(f"legal_ttt val_loss:{t_loss:.4f} val_bpb:{t_bpb:.4f} eval_time:{1000 * (time.perf_counter() - t1):.0f}ms")
        log.log(f"legal_ttt_exact val_loss:{t_loss:.8f} val_bpb:{t_bpb:.8f}")
        final_loss, final_bpb, final_label = t_loss, t_bpb, "legal_ttt"
        metrics.update(ttt_val_loss=t_loss, ttt_val_bpb=t_bpb)
    eval_ms = 1000.0 * (time.perf_counter() - t_eval)
    log.log(f"timing:eval_ms:{eval_ms:.0f} eval_budget_ms:{eval_ms:.0f}/600000")

    tokens_seen = steps_done * h.train_batch_tokens
    metrics.update(
        run_id=run_id, seed=h.seed, steps=steps_done, step_avg_ms=train_time_ms / max(steps_done, 1),
        train_time_ms=train_time_ms, serialize_ms=serialize_ms, calibration_ms=calib_ms, eval_time_ms=eval_ms,
        tokens_per_s=tokens_seen / max(train_time_ms / 1000.0, 1e-9), pre_quant_val_loss=pre_loss,
        pre_quant_val_bpb=pre_bpb, val_loss=final_loss, val_bpb=final_bpb, scored_label=final_label,
        model_bytes=model_bytes, code_bytes=code_bytes, artifact_bytes=model_bytes + code_bytes,
        artifact_label=label, model_params=n_params, world_size=ctx.world_size, stopped_early=stop_after is not None,
        history=history, **versions_info(),
        # the validation scope: scored targets vs the split's size (VAL_MAX_TOKENS makes a run partial)
        val_tokens=int((full_val if full_val is not None else val_tokens).numel() - 1),
        val_tokens_available=sum(shard_token_count(f) for f in shard_paths(h.data_path, "val")),
    )
    if code_form:
        metrics["code_form"] = code_form
    if ctx.is_main:
        write_json_atomic(os.path.join(out_dir, "config.json"), h.to_dict())
        write_json_atomic(os.path.join(out_dir, "metrics.json"), metrics)
    log.result({k: v for k, v in metrics.items() if k != "history"})
    return metrics


def _with_wallclock(h: Hyperparameters, seconds: float) -> Hyperparameters:
    out = copy.copy(h)
    out.max_wallclock_seconds = seconds
    return out


def _progress(step: int, elapsed_ms: float, h: Hyperparameters, max_ms: float) -> float:
    by_steps = step / max(h.iterations, 1)
    return max(by_steps, elapsed_ms / max_ms) if max_ms > 0 else by_steps


def main() -> None:
    """Entry point of a built train_gpt.py: configured by environment variables (and BAKED_CONFIG)."""
    code_bytes = len(open(os.path.abspath(sys.argv[0]), "rb").read()) if sys.argv and sys.argv[0].endswith(".py") else 0
    try:
        run(Hyperparameters.resolve(), code_bytes=code_bytes)
    except PgolfError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
