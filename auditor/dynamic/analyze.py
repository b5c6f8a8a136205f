"""Turn the child's per-run records and score captures into findings (rule ids PG4D*, PG5D*, PG900) and metrics."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from auditor.findings import Finding

FLIP_ATOL, FLIP_RTOL = 1e-4, 1e-4
NORM_TOL = 1e-3
_TOOLCHAIN = re.compile(r"(?:^|[\s/'\"\[])(?:g\+\+|gcc|c\+\+|cc|clang\+{0,2}|nvcc|ninja|cmake)(?:[\s'\",\]]|$)|\bbuild_ext\b")
_COMPRESSOR = re.compile(r"^subprocess\.Popen \('(?:[^']*/)?(?:lrzip|xz|zstd|brotli|gzip|pigz|bzip2|lzma|7z|7za|zpaq)'")
_BUILD_TOOLS = ((_TOOLCHAIN, "a compiler to build native code"), (_COMPRESSOR, "an external compressor"))
_SANDBOX_TEXT = {
    "secret_read": "tried to read a secret file",
    "write_outside": "tried to write outside its working directory",
    "process": "tried to start a process",
    "tamper": "tried to overwrite the auditor's own files",
}


def flip_check(main_caps, flip_caps, j: int) -> dict:
    """Positions <= j have identical prefix and target in both streams: any score change there is a leak."""
    compared, leaks, first = 0, 0, []
    max_diff = 0.0
    for (ka, pa, va), (kb, pb, vb) in zip(main_caps, flip_caps):
        if ka != kb or pa.shape != pb.shape:
            continue
        m = (pa == pb) & (pa >= 0) & (pa <= j)
        if not m.any():
            continue
        a, b = va[m].astype(np.float64), vb[m].astype(np.float64)
        ok = np.isfinite(a) & np.isfinite(b)
        d = np.abs(a - b)
        bad = ok & (d > FLIP_ATOL + FLIP_RTOL * np.abs(a))
        compared += int(m.sum())
        if bad.any():
            leaks += int(bad.sum())
            max_diff = max(max_diff, float(d[bad].max()))
            if len(first) < 10:
                first.extend(int(x) for x in np.unique(pa[m][bad])[: 10 - len(first)])
    return {"compared": compared, "leaks": leaks, "first_positions": sorted(set(first)), "max_abs_diff": max_diff,
            "captures_main": len(main_caps), "captures_flip": len(flip_caps)}


def _score_at(caps, pos: int) -> float | None:
    """Probability the script assigned at `pos`, from the last capture that holds it."""
    for kind, p, v in reversed(caps):
        hit = np.nonzero(p == pos)[0]
        if hit.size:
            x = float(v[hit[-1]])
            return math.exp(-x) if kind == 0 else math.exp(x)
    return None


def norm_check(caps_by_cand: dict[int, list], pos: int, vocab: int) -> dict:
    probs = {c: _score_at(caps, pos) for c, caps in caps_by_cand.items()}
    got = {c: p for c, p in probs.items() if p is not None}
    total = float(sum(got.values()))
    full = len(got) == vocab
    excess = total > 1.0 + NORM_TOL
    deficit = full and total < 1.0 - NORM_TOL
    return {"position": pos, "candidates": len(probs), "observed": len(got), "sum_p": total, "full_vocab": full,
            "violation": bool(excess or deficit),
            "top": sorted(((round(p, 6), c) for c, p in got.items()), reverse=True)[:5]}


def _log_times(submission: Path) -> dict:
    try:
        from auditor.logs import parse_log
    except Exception:  # noqa: BLE001
        return {}
    folder = submission if submission.is_dir() else submission.parent
    for p in sorted(folder.glob("*.log")) + sorted(folder.glob("*.txt")) + sorted(folder.glob("logs/*.txt")):
        try:
            info = parse_log(p.read_text(encoding="utf-8", errors="replace"), p.name)
        except Exception:  # noqa: BLE001
            continue
        if info.is_training_log:
            return {"log": p.name, "train_ms": info.train_time_ms, "calibration_s": info.calibration_s,
                    "serialize_s": info.serialize_s, "eval_ms": info.max_eval_time_ms}
    return {}


_LOGLIKE = (".txt", ".log", ".json", ".md", ".csv", ".tsv", ".jsonl")


def _phase_times(rec: dict) -> dict:
    """train: start -> last training step; calibration+serialization: -> last artifact write after it (or the first
    scoring after training when nothing is written); eval: -> end of the run."""
    pr = rec.get("probe") or {}
    t0, t_end = rec.get("t_start"), rec.get("t_end")
    lt = pr.get("t_last_train")
    out = {"total_s": round(rec.get("wall_s", 0.0), 3)}
    if not (t0 and lt):
        return out
    out["train_s"] = round(lt - t0, 3)
    arts = [w["t"] for w in rec.get("writes", [])
            if w["t"] > lt and not re.sub(r"\.tmp[-.\w]*$", "", w["path"]).endswith(_LOGLIKE)]
    t_ser = max(arts) if arts else pr.get("t_first_score_after_train")
    if t_ser:
        out["calibration_serialization_s"] = round(t_ser - lt, 3)
        out["eval_s"] = round(t_end - t_ser, 3)
    return out


def analyze(workdir: Path, plan: dict, meta: dict, prep: dict, child, submission: Path, script: Path):
    rel = script.name
    findings: list[Finding] = []
    results = child.results or {"runs": []}  # validated by channel.decode (never read from a file the child wrote)
    runs = {r["name"]: r for r in results.get("runs", [])}
    tail = child.output_tail[-3000:]
    metrics = {"child_wall_s": round(child.wall_s, 3), "isolation": child.isolation, "vocab_size": prep["vocab"],
               "env": prep["env"], "runs": {n: {"ok": r["ok"], "wall_s": round(r["wall_s"], 3)} for n, r in runs.items()},
               "log_times": _log_times(submission), "shrunk": prep.get("shrunk", {}),
               "hard_coded": prep.get("hard_coded", []), "python": prep.get("python_version")}
    # --- sandbox -------------------------------------------------------------------------------------------
    viol = [v for r in results.get("runs", []) for v in r.get("violations", [])]
    for kind in ("secret_read", "write_outside", "process", "tamper"):
        hits = [v["detail"] for v in viol if v["kind"] == kind]
        # a tool the records run for their own build (g++ compiling a fused kernel, lrzip packing the artifact) is no
        # violation; the sandbox runs only the interpreter, so the run cannot be observed past it
        tool = next((what for rx, what in _BUILD_TOOLS
                     if hits and kind == "process" and all(rx.search(h) for h in hits)), None)
        if tool:
            findings.append(Finding("PG5D4", "warning", f"sandbox: the script tried to run {tool} ({len(hits)}x, "
                                    f"first: {hits[0]}); the sandbox runs no other program, so the code after it "
                                    "was not observed (the static verdict stands)", rel,
                                    evidence={"attempts": hits[:10]}))
            continue
        if hits:
            findings.append(Finding("PG5D4", "error", f"sandbox: the script {_SANDBOX_TEXT[kind]} ({len(hits)}x, "
                                    f"first: {hits[0]}); the attempt was blocked", rel, evidence={"attempts": hits[:10]}))
    probes = sorted({v["detail"] for v in viol if v["kind"] == "secret_probe"})
    if probes:
        findings.append(Finding("PG5D4", "warning", f"sandbox: the script looked for credential files in its home "
                                f"directory ({len(probes)}x, first: {probes[0]}); the sandbox's home is an empty work "
                                "dir, so nothing was there to read", rel, evidence={"paths": probes[:10]}))
    benign = sorted({v["detail"] for v in viol if v["kind"] == "benign_process"})
    if benign:
        findings.append(Finding("PG5D4", "note", f"sandbox: system-info and library-lookup commands "
                                f"{', '.join(benign)} were not run (answered with empty output, or as absent tools)",
                                rel, evidence={"commands": benign}))
    net = [v["detail"] for v in viol if v["kind"] == "network"]
    if net:
        findings.append(Finding("PG5D3", "error", f"network: the script tried to open a network connection "
                                f"({len(net)}x, first: {net[0]}); blocked — submissions must run offline", rel,
                                evidence={"attempts": net[:10]}))
    if results.get("secret_env"):
        findings.append(Finding("PG5D4", "warning", "sandbox: the script looked up secret-like environment variables "
                                f"{', '.join(results['secret_env'][:5])} (scrubbed in the sandbox)", rel,
                                evidence={"names": results["secret_env"]}))
    main = runs.get("main")
    if child.timed_out:
        limit = f"it exceeded the {plan.get('timeout', 0):g} s wall-clock limit and was killed"
        findings.append(Finding("PG5D5", "warning", f"resource limit: the tiny run did not finish ({limit}); its "
                                "process group was killed", rel, evidence={"wall_s": child.wall_s,
                                                                           "finished_runs": sorted(runs)}))
    if main is None or not main["ok"]:
        if main is not None:
            e = main["error"]
            why = f"{e['where']} raised {e['type']}: {e['msg']}"
            if e["type"] == "MemoryError":
                findings.append(Finding("PG5D5", "warning", f"resource limit: the run ran out of its address-space "
                                        f"limit ({e['where']})", rel))
            special = _cannot_run_on_cpu(e, prep, rel, tail)
            if special is None and prep.get("hard_coded") and (
                    e["type"] == "MemoryError" or "can't allocate memory" in e["msg"]):
                special = _too_big(plan, prep, rel, tail, why=f"ran out of memory ({e['type']}) at {e['where']}")
            if special is not None:
                return findings + [special], metrics
        elif child.timed_out:
            why = f"the main run did not finish within {plan.get('timeout', 0):g} s"
            if prep.get("hard_coded"):
                return findings + [_too_big(plan, prep, rel, tail)], metrics
        else:
            why = f"the child exited with status {child.returncode} before the run completed"
            if child.returncode is not None and child.returncode < 0:
                why += f" (signal {-child.returncode})"
        findings.append(Finding("PG900", "warning", f"dynamic audit could not run the script on CPU: {why}; the "
                                "static verdict stands", rel, evidence={"output_tail": tail[-1500:]}))
        return findings, metrics
    pr = main["probe"]
    metrics["ledger"] = {k: pr[k] for k in ("scored", "tainted", "sweeps", "trained_positions", "val_train_backwards",
                                           "train_backwards", "opt_steps", "n_val", "score_versions",
                                           "train_versions")}
    metrics["phases"] = _phase_times(main)
    # --- provenance ledger -----------------------------------------------------------------------------------
    if pr["tainted"]:
        findings.append(Finding(
            "PG4D1", "error",
            f"score-after-update: {pr['tainted']} of {pr['scored']} scored validation positions were scored by weights "
            f"already trained on them (first positions {pr['tainted_first'][:5]}); only tokens already scored may be "
            "trained on (score first, then adapt)", rel,
            evidence={"tainted": pr["tainted"], "scored": pr["scored"], "first_positions": pr["tainted_first"],
                      "first_offenders": [{"position": p, "trained_at_version": t, "scored_at_version": v}
                                          for p, t, v in pr["tainted_detail"][:10]],
                      "weight_versions": pr["tainted_versions"], "trained_positions": pr["trained_positions"],
                      "first_updates": pr["first_trained_positions"]}))
    # --- data trace ------------------------------------------------------------------------------------------
    reads = main.get("shard_reads", [])
    t_first, t_last = pr.get("t_first_train"), pr.get("t_last_train")
    if t_last:
        late = [r for r in reads if r["split"] == "train" and r["t"] > t_last]
        if late:
            reserve = {k: v for k, v in prep["env"].items() if "RESERVE" in k and _pos(v)}
            lt = metrics["log_times"]
            in_budget = (lt.get("train_ms") is not None and lt.get("calibration_s") is not None
                         and lt["train_ms"] + 1000.0 * lt["calibration_s"] <= 600_000.0)
            lvl = "note" if (reserve or in_budget) else "error"
            if reserve:
                why = f"after the training loop, inside the reserved training time {reserve} (not timed by this probe)"
            elif in_budget:
                why = (f"after the training loop; the log {lt['log']} reports training {lt['train_ms'] / 1000:.1f} s + "
                       f"calibration {lt['calibration_s']:.1f} s <= 600 s")
            else:
                why = ("after the last training step, with no reserved time and no log showing it inside the budget: "
                       "training data used for calibration must be read inside the 600 s training budget")
            findings.append(Finding("PG5D1", lvl, f"training shard {late[0]['path']} read ({late[0]['how']}) {why}",
                                    rel, evidence={"reads": late[:5], "t_after_last_step_s": round(late[0]['t'] - t_last, 3)}))
    if t_first and t_last:
        segs = pr.get("train_segments") or [[t_first, t_last]]
        during = [r for r in reads if r["split"] == "val" and any(a < r["t"] < b for a, b in segs)]
        if during:
            findings.append(Finding("PG5D2", "error", f"validation shard {during[0]['path']} read during training "
                                    f"({during[0]['how']}); validation data must not be accessed while training",
                                    rel, evidence={"reads": during[:5]}))
    # --- flip ------------------------------------------------------------------------------------------------
    main_caps = child.captures.get("main", [])
    metrics["captures"] = len(main_caps)
    flip = runs.get("flip")
    if flip and flip["ok"] and main_caps:
        fc = flip_check(main_caps, child.captures.get("flip", []), meta["flip_j"])
        metrics["flip"] = fc
        if fc["leaks"]:
            findings.append(Finding(
                "PG4D2", "error",
                f"causality: changing validation tokens after position {meta['flip_j']} changed the recorded score of "
                f"{fc['leaks']} earlier positions (first {fc['first_positions'][:5]}, max |ΔNLL| "
                f"{fc['max_abs_diff']:.3g}); scores must depend only on the prefix (no scored-region SLOT, no "
                "two-pass caches)", rel, evidence=fc))
    elif flip and not flip["ok"]:
        findings.append(Finding("PG900", "warning", f"dynamic audit: flip run failed ({flip['error']['where']} "
                                f"{flip['error']['type']}); causality not checked", rel))
    # --- normalization ---------------------------------------------------------------------------------------
    if main_caps and meta["norm_candidates"]:
        by = {meta["norm_candidates"][0]: main_caps}
        for r in plan["runs"]:
            if r["name"].startswith("norm_") and runs.get(r["name"], {}).get("ok"):
                by[int(r["name"][5:])] = child.captures.get(r["name"], [])
        nc = norm_check(by, meta["norm_pos"], prep["vocab"])
        metrics["normalization"] = nc
        if nc["violation"]:
            findings.append(Finding(
                "PG4D3", "error",
                f"normalization: at validation position {nc['position']} the probabilities the script assigns to "
                f"{nc['observed']} candidate targets sum to {nc['sum_p']:.4f} (must be <= 1 over a subset, = 1 over "
                "the vocabulary); the reported score is not a probability", rel, evidence=nc))
    if not main_caps:
        findings.append(Finding("PG900", "warning", "dynamic audit: no per-position validation scores were observed "
                                "(no reduction='none' cross-entropy or log of probabilities under no-grad); flip and "
                                "normalization probes skipped", rel))
    ph = metrics.get("phases", {})
    findings.append(Finding("PG9D0", "note", "dynamic audit ran the script on tiny data: " + ", ".join(
        f"{k}={v}s" for k, v in ph.items()) + (f"; logs report {metrics['log_times']}" if metrics["log_times"] else "")
        + "; " + shrink_text(prep) + _stream_text(prep), rel,
        evidence={"phases": ph, "log_times": metrics["log_times"], "shrunk": prep.get("shrunk", {}),
                  "hard_coded": prep.get("hard_coded", []), "val_tokens": int(len(prep["val"])),
                  "val_doc_len": prep.get("val_doc_len"), "retry": prep.get("retry")}))
    return findings, metrics


# the f-string grammar of PEP 701 (quotes reused inside replacement fields, backslashes, comments) is Python 3.12+
# libraries that ship CUDA kernels only (the shims stand in for triton and FlashAttention)
_GPU_LIBS = ("mamba_ssm", "causal_conv1d", "apex", "xformers", "liger_kernel", "flashinfer", "transformer_engine",
             "bitsandbytes", "fla", "cut_cross_entropy", "deep_gemm", "torchao")
_CUDA_ONLY = re.compile(r"requires? (a )?CUDA|CUDA tensors? (is |are )?required|must be (on )?CUDA|CUDA is required",
                        re.I)
_PEP701 = re.compile(r"f-string|unterminated string|unmatched|expecting '}'")


def shrink_text(prep: dict) -> str:
    """What the audit changed to make the run tiny, through the script's own knobs, and what it could not."""
    sh = prep.get("shrunk") or {}
    parts = [f"{k} {'(default)' if v[0] is None else v[0]}->{v[1]}" for k, v in sorted(sh.items())]
    out = ("shrunk through the script's environment: " + ", ".join(parts)) if parts else "nothing shrunk"
    if prep.get("hard_coded"):
        out += f"; hard-coded (not shrunk): {', '.join(prep['hard_coded'])}"
    return out


def _cannot_run_on_cpu(e: dict, prep: dict, rel: str, tail: str) -> Finding | None:
    """A run stopped by what the machine lacks, not by the script: a GPU-only kernel (PG901) or an interpreter older
    than the code's syntax (PG902). Notes: the static verdict stands and the message says what would run it."""
    if e["type"] == "PgolfNeedsGPU":
        return Finding("PG901", "note", f"dynamic audit: {e['msg']} (launched from {e['where']}); this code path "
                       "cannot be observed on CPU, the static verdict stands; audit on a machine with a GPU",
                       rel, evidence={"where": e["where"], "output_tail": tail[-1500:]})
    gpu_lib = re.search(r"No module named '(" + "|".join(_GPU_LIBS) + r")[\w.]*'", e["msg"])
    if e["type"] in ("ModuleNotFoundError", "ImportError") and gpu_lib:
        return Finding("PG901", "note", f"dynamic audit: the script imports {gpu_lib.group(1)}, a CUDA-only library "
                       f"(at {e['where']}); this code path cannot be observed on CPU, the static verdict stands; audit "
                       "on a machine with a GPU", rel, evidence={"where": e["where"], "module": gpu_lib.group(1)})
    if _CUDA_ONLY.search(e["msg"]):  # the script itself refuses CPU tensors on the path the run takes
        return Finding("PG901", "note", f"dynamic audit: the script requires CUDA at {e['where']} ({e['type']}: "
                       f"{e['msg'][:200]}); this code path cannot be observed on CPU, the static verdict stands; audit "
                       "on a machine with a GPU", rel, evidence={"where": e["where"], "output_tail": tail[-1500:]})
    if e["type"] in ("SyntaxError", "IndentationError", "TabError"):
        ver = prep.get("python_version") or "?"
        need = "3.12" if _PEP701.search(e["msg"]) else None
        wants = f"Python >= {need} (PEP 701 f-strings)" if need else f"a newer Python than {ver}"
        return Finding("PG902", "note", f"dynamic audit: the script's code does not parse under Python {ver} "
                       f"({e['msg']} at {e['where'] or 'decoded payload'}); it needs {wants}. Run the audit with one: "
                       f"`pgolf audit --dynamic --python /path/to/python{need or '3.X'}` (it needs torch and numpy "
                       "installed); the static verdict stands", rel,
                       evidence={"python": prep.get("python"), "python_version": ver, "needs": need,
                                 "error": e["msg"]})
    return None


def _too_big(plan: dict, prep: dict, rel: str, tail: str, why: str = "") -> Finding:
    hard = ", ".join(prep["hard_coded"])
    why = why or f"did not finish within {plan.get('timeout', 0):g} s"
    return Finding("PG903", "note", f"dynamic audit: the tiny run {why}; "
                   f"the script hard-codes its {hard} (no environment knob to shrink), so the CPU run keeps the record's "
                   "size; the static verdict stands (raise --timeout or audit on a GPU)", rel,
                   evidence={"hard_coded": prep["hard_coded"], "shrunk": prep.get("shrunk", {}),
                             "output_tail": tail[-1500:]})


def _pos(v) -> bool:
    try:
        return float(v) > 0
    except (TypeError, ValueError):
        return False


def _stream_text(prep) -> str:
    text = f"; validation stream {len(prep['val']):,} tokens, a document every {prep.get('val_doc_len') or '?'}"
    if prep.get("retry"):
        text += f" (second run: {prep['retry']})"
    return text
