"""Benchmark: does `pgolf audit --dynamic-only` run real submissions to a verdict, and does the verdict agree?

Runs the dynamic audit on every record folder under a corpus (default ../shared/submissions, with labels.json), one
folder at a time, each as its own `pgolf audit --dynamic-only --format json` process with a per-folder timeout.
Prints one line per folder and a table: ran to a verdict / stopped (by reason) / agreement with the labels for the
folders that ran (clean and accepted: no PG4D*/PG5D* error; illegal: a PG4D*/PG5D* error), median/max wall time.

    python bench/dynamic_corpus.py ../shared/submissions [--timeout 300] [--only clean/pr50,illegal/pr152]
        [--python PATH] [--log FILE.jsonl] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# PG900 reasons, first match wins (the message says what stopped the run)
REASONS = [
    ("needs newer Python", re.compile(r"needs Python \d|newer Python|--python")),
    ("needs GPU", re.compile(r"needs a GPU|needs GPU")),
    ("too big for CPU", re.compile(r"hard-codes|too large for the CPU|cannot shrink")),
    ("timeout", re.compile(r"did not finish within|wall-clock limit")),
    ("sandbox refused a write to /tmp", re.compile(r"SandboxDenied: pgolf sandbox: writing /tmp")),
    ("sandbox refused a process", re.compile(r"SandboxDenied: pgolf sandbox: creating processes")),
    ("sandbox refused a read", re.compile(r"SandboxDenied: pgolf sandbox: reading")),
    ("needs a file the folder lacks", re.compile(r"FileNotFoundError")),
    ("missing module", re.compile(r"ModuleNotFoundError|No module named")),
    ("configuration", re.compile(r"ValueError: invalid literal|could not prepare the run")),
]
DYN_ERROR = re.compile(r"^PG[45]D\d$")


def classify(findings: list[dict]) -> tuple[str, str]:
    """('ran'|'stopped', reason). A run reached a verdict when the main run finished (its PG9D0 summary exists)."""
    if any(f["rule"] == "PG9D0" for f in findings):
        return "ran", ""
    by_rule = {"PG901": "needs GPU", "PG902": "needs newer Python", "PG903": "too big for CPU"}
    for f in findings:
        if f["rule"] in by_rule:
            return "stopped", by_rule[f["rule"]]
    msgs = [f["message"] for f in findings if f["rule"].startswith("PG9")]
    text = " | ".join(msgs)
    for name, rx in REASONS:
        if rx.search(text):
            return "stopped", name
    exc = re.search(r"raised (\w+)", text)
    return "stopped", "other: " + (exc.group(1) if exc else (msgs[0][:80] if msgs else "no finding"))


def expected(label: dict | None) -> str:
    if label is None:
        return "?"
    return {"clean": "clean", "illegal": "illegal"}.get(label.get("label", ""), "borderline")


def audit_one(folder: Path, timeout: float, python: str | None, cache: Path) -> dict:
    cmd = [sys.executable, "-m", "pgolf", "audit", str(folder), "--dynamic-only", "--format", "json",
           "--no-progress", "--timeout", str(timeout)]
    if python:
        cmd += ["--python", python]
    env = dict(os.environ, OMP_NUM_THREADS="1", PGOLF_CACHE_DIR=str(cache))
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 120, env=env, cwd=REPO)
    except subprocess.TimeoutExpired:
        return {"status": "stopped", "reason": "timeout (outer)", "wall_s": time.perf_counter() - t0, "rules": []}
    wall = time.perf_counter() - t0
    try:
        subs = json.loads(p.stdout)["submissions"]
    except (ValueError, KeyError):
        return {"status": "stopped", "reason": f"auditor exit {p.returncode}: {p.stderr.strip()[-200:]}",
                "wall_s": wall, "rules": []}
    # a folder that nests another record is audited twice; the entry for the folder itself is the one asked for
    sub = next((s for s in subs if Path(s["path"]).resolve() == folder.resolve()), subs[0])
    findings = sub["findings"]
    status, reason = classify(findings)
    dyn = sub.get("metrics", {}).get("dynamic", {})
    return {"status": status, "reason": reason, "wall_s": round(wall, 1),
            "rules": sorted({f"{f['rule']}:{f['level']}" for f in findings}),
            "dyn_errors": sorted({f["rule"] for f in findings if DYN_ERROR.match(f["rule"]) and f["level"] == "error"}),
            "notes": [f["message"][:300] for f in findings if f["rule"].startswith("PG9") and f["rule"] != "PG9D0"],
            "shrunk": dyn.get("shrunk"), "child_wall_s": dyn.get("child_wall_s")}


def agreement(row: dict) -> str:
    if row["status"] != "ran":
        return ""
    caught = bool(row.get("dyn_errors"))
    exp = row["expected"]
    if exp == "clean":
        return "agree" if not caught else "FALSE POSITIVE"
    if exp == "illegal":
        return "caught" if caught else "missed"
    return "flagged" if caught else "passed"


def summarize(rows: list[dict]) -> str:
    lines = []
    groups = {"clean+accepted": [r for r in rows if r["expected"] == "clean"],
              "illegal": [r for r in rows if r["expected"] == "illegal"],
              "borderline": [r for r in rows if r["expected"] not in ("clean", "illegal")]}
    lines.append("| group | folders | ran to a verdict | stopped (by reason) | agreement among those that ran |")
    lines.append("|---|---|---|---|---|")
    for g, rs in groups.items():
        if not rs:
            continue
        ran = [r for r in rs if r["status"] == "ran"]
        reasons: dict[str, int] = {}
        for r in rs:
            if r["status"] != "ran":
                reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
        agree: dict[str, int] = {}
        for r in ran:
            agree[r["agreement"]] = agree.get(r["agreement"], 0) + 1
        stop = ", ".join(f"{k} {v}" for k, v in sorted(reasons.items(), key=lambda kv: -kv[1])) or "-"
        ag = ", ".join(f"{k} {v}" for k, v in sorted(agree.items())) or "-"
        lines.append(f"| {g} | {len(rs)} | {len(ran)} ({100 * len(ran) / len(rs):.0f}%) | {stop} | {ag} |")
    pats: dict[str, list] = {}
    for r in rows:
        if r["expected"] == "illegal":
            pats.setdefault(r["pattern"][:1], []).append(r)
    lines.append("")
    lines.append("| illegal pattern | folders | ran | caught dynamically |")
    lines.append("|---|---|---|---|")
    for p, rs in sorted(pats.items()):
        ran = [r for r in rs if r["status"] == "ran"]
        lines.append(f"| {p} | {len(rs)} | {len(ran)} | {sum(r['agreement'] == 'caught' for r in ran)} |")
    times = [r["wall_s"] for r in rows if r["status"] == "ran"]
    if times:
        lines.append("")
        lines.append(f"wall time per folder that ran: median {statistics.median(times):.0f} s, max {max(times):.0f} s "
                     f"(all folders: max {max(r['wall_s'] for r in rows):.0f} s)")
    return "\n".join(lines)


def expectation(row: dict) -> dict:
    """What the per-folder regression test holds a folder to: ran or stopped (and why), and its dynamic errors."""
    return {"status": row["status"], "reason": row.get("reason", ""), "dyn_errors": row.get("dyn_errors", [])}


def compare(rows: list[dict], expectations: dict) -> list[str]:
    """One line per folder whose outcome differs from the stored expectation."""
    out = []
    for r in rows:
        want = expectations.get(r["folder"])
        got = expectation(r)
        if want is not None and want != got:
            out.append(f"{r['folder']}: expected {want}, got {got}")
    return out


def folders(corpus: Path, only: list[str] | None) -> list[Path]:
    from auditor.source import discover

    out = []
    for _root, _entry, display, is_folder in discover([corpus]):
        p = Path(display)
        if not is_folder or any(p.parent.resolve() == q.resolve() for q in out):
            continue  # a record nested inside another record is part of it, not a submission of its own
        rel = p.resolve().relative_to(corpus.resolve()).as_posix()
        if only and rel not in only:
            continue
        out.append(p)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus", nargs="?", default=str(REPO.parent / "shared" / "submissions"))
    ap.add_argument("--timeout", type=float, default=300.0, help="dynamic audit time limit per folder (s)")
    ap.add_argument("--only", help="comma-separated folders relative to the corpus (default: all)")
    ap.add_argument("--python", help="interpreter the submissions run under (pgolf audit --python)")
    ap.add_argument("--log", help="append one JSON line per folder here as it finishes")
    ap.add_argument("--json", help="write all rows and the table here at the end")
    ap.add_argument("--cache", help="cache dir (default: a fresh temp dir; tokenizers are shared across folders)")
    ap.add_argument("--write-expectations", metavar="PATH",
                    help="write each folder's outcome (status, stop reason, dynamic errors) here for the regression "
                    "test (tests/data/dynamic_corpus_expectations.json)")
    args = ap.parse_args()
    corpus = Path(args.corpus)
    if not (corpus / "labels.json").is_file():
        print(f"dynamic_corpus: {corpus} has no labels.json (expected the submissions corpus)", file=sys.stderr)
        return 2
    labels = {e["folder"]: e for e in json.loads((corpus / "labels.json").read_text())}
    only = [s.strip().strip("/") for s in args.only.split(",")] if args.only else None
    cache = Path(args.cache) if args.cache else Path(tempfile.mkdtemp(prefix="pgolf-dyncorpus-"))
    if not args.cache:  # fresh results, but the tokenizers trained once per vocabulary size are the user's cache
        from auditor.dynamic.harness import default_cache_dir

        shared = default_cache_dir() / "tokenizers"
        shared.mkdir(parents=True, exist_ok=True)
        (cache / "dynamic").mkdir()
        os.symlink(shared, cache / "dynamic" / "tokenizers")
    rows = []
    t_all = time.time()
    for p in folders(corpus, only):
        rel = p.resolve().relative_to(corpus.resolve()).as_posix()
        lab = labels.get(rel)
        row = {"folder": rel, "expected": expected(lab), "pattern": (lab or {}).get("pattern", "?")}
        row.update(audit_one(p, args.timeout, args.python, cache))
        row["agreement"] = agreement(row)
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.log:
            with open(args.log, "a") as fh:
                fh.write(json.dumps(row) + "\n")
    table = summarize(rows)
    print(table)
    print(f"total {time.time() - t_all:.0f} s, load average {os.getloadavg()}, cpus {os.cpu_count()}")
    for path, obj in ((args.json, {"rows": rows, "table": table}),
                      (args.write_expectations, {r["folder"]: expectation(r) for r in rows})):
        if path:
            tmp = f"{path}.tmp-{os.getpid()}"
            Path(tmp).write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")
            os.replace(tmp, path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
