"""Child entry point: run the submission's script once per planned run (main, flip variant, normalization
variants) in this one process, with the guard armed and the probes reset per run; write results as JSON."""

from __future__ import annotations

import json
import os
import runpy
import shutil
import sys
import time
import traceback

import numpy as np
import torch

import pgolf_channel
import pgolf_guard
import pgolf_probe

KINDS = {"nll": 0, "logp": 1}


def _where(exc: BaseException, script: str) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    mine = [f for f in frames if os.path.realpath(f.filename) == os.path.realpath(script)]
    f = (mine or frames or [None])[-1]
    if f is None:
        return ""
    return f"{os.path.basename(f.filename)}:{f.lineno} in {f.name}: {(f.line or '').strip()[:160]}"


def _save_captures(name: str) -> int:
    """Send the run's per-position score captures to the auditor (pgolf_channel: capped, fixed dtypes)."""
    return pgolf_channel.send_captures(name, pgolf_probe.R.get("captures", []))


_MAIN_CAPS: list = []


def _has_logp(pos: int) -> bool:
    return any(kind == "logp" and (p == pos).any() for kind, p, _ in _MAIN_CAPS)


def _write(out: str, results: dict) -> None:
    pgolf_guard.activate(False)
    try:
        _write_json(out, results)
    finally:
        pgolf_guard.activate(True)


def _write_json(out: str, results: dict) -> None:
    """Results go to the auditor through the sandbox's results pipe, never through a file the script can reach."""
    pgolf_channel.send_results(results)


def main() -> int:
    plan = json.load(open(sys.argv[1]))
    script, out = plan["script"], plan["out"]
    results = {"runs": [], "secret_env": [], "started": time.time()}
    # the auditor's own variables are not the script's business (and make detecting the audit a one-liner)
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("PGOLF_") and k != "PYTHONPATH"}
    sys.argv = [script]
    torch.set_num_threads(1)
    sys.path.insert(0, os.path.dirname(script))
    pgolf_guard.activate()
    for run in plan["runs"]:
        if run.get("only_if_logp") and not _has_logp(plan["norm_pos"]):
            continue  # scores come only from cross_entropy, a softmax: normalized by construction
        os.environ.clear()
        os.environ.update(base_env)
        os.environ.update(run["env"])
        pgolf_guard.activate(False)
        try:
            for src, dst in run.get("val_copies") or ([run["val_shard"]] if run.get("val_shard") else []):
                tmp = dst + ".pgolf-tmp"
                shutil.copyfile(src, tmp)
                os.replace(tmp, dst)
            val = np.load(run["val_tokens"])
        finally:
            pgolf_guard.activate(True)
        pgolf_probe.begin_run(val, plan["vocab_size"])
        n_viol = len(pgolf_guard.STATE["violations"])
        pgolf_guard.STATE["shard_reads"] = []
        pgolf_guard.STATE["writes"] = []
        print(f"===== pgolf dynamic run: {run['name']} =====", flush=True)
        rec = {"name": run["name"], "ok": True, "error": None}
        t0 = time.time()
        try:
            runpy.run_path(script, run_name="__main__")
        except SystemExit as e:
            if e.code not in (None, 0):
                rec.update(ok=False, error={"type": "SystemExit", "msg": str(e.code)[:300], "where": _where(e, script)})
        except BaseException as e:  # noqa: BLE001 - any failure of untrusted code is a result, not a crash
            rec.update(ok=False, error={"type": type(e).__name__, "msg": str(e)[:400], "where": _where(e, script)})
        rec["wall_s"] = time.time() - t0
        rec["t_start"] = t0
        rec["t_end"] = time.time()
        rec["probe"] = pgolf_probe.summary()
        if run["name"] == "main":
            _MAIN_CAPS[:] = pgolf_probe.R.get("captures", [])
        rec["shard_reads"] = pgolf_guard.STATE["shard_reads"][:200]
        rec["writes"] = pgolf_guard.STATE["writes"][:200]
        rec["violations"] = pgolf_guard.STATE["violations"][n_viol:]
        pgolf_guard.activate(False)
        try:
            rec["captures"] = _save_captures(run["name"])
        finally:
            pgolf_guard.activate(True)
        results["runs"].append(rec)
        results["secret_env"] = sorted(set(pgolf_guard.STATE["secret_env"]))
        _write(out, results)
        sys.stdout.flush()
        torch.set_grad_enabled(True)
        torch.set_default_dtype(torch.float32)
        if not rec["ok"] and run.get("required", False):
            break
    results["finished"] = time.time()
    _write(out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
