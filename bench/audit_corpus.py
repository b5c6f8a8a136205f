"""Measure `pgolf audit` against the labelled corpus of real submissions.

    python bench/audit_corpus.py ../shared/submissions [--jobs 2] [--json ROWS.json]
        [--write-expectations tests/data/audit_corpus_expectations.json]

Each labelled folder of labels.json is audited as one submission (discovery does not descend into a record folder,
so a nested readable copy belongs to its folder; a labelled folder without its own train_gpt*.py would be the union
of the submissions under it). Prints per folder: label, verdict, error-level rule ids, the top finding and CPU
seconds; then the confusion matrix and the targets:
  illegal caught (error-level PG4xx/PG5xx)        >= 39/41
  clean/accepted with an error-level PG4xx/PG5xx  == 0
  clean/accepted gated (verdict pass)             >= 34/38
  borderline with a PG4xx/PG5xx warning or error  == 9/9
  crashes / "error" verdicts                      == 0/88
Exit status 0 when every target is met, 1 otherwise, 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CATEGORIES = ("illegal", "clean", "accepted", "borderline")
LEGALITY = ("PG4", "PG5")


def category(entry: dict) -> str:
    """accepted = merged into the challenge's main branch (label clean, folder accepted/...)."""
    return "accepted" if entry["folder"].startswith("accepted/") else entry["label"]


def _audit_folder(folder: str) -> dict:
    """Audit one labelled folder like `pgolf audit FOLDER` (default settings, its own suppression file)."""
    import traceback

    from auditor.engine import Options, analyse
    from auditor.postprocess import finish
    from auditor.report import top_finding
    from auditor.rules import all_rules
    from auditor.source import discover
    from auditor.suppress import Settings

    t0, c0 = time.process_time(), _children_cpu()
    try:
        items = [(str(r), str(e) if e else None, d, f) for r, e, d, f in discover([folder])]
        try:  # the CLI's path: each submission in a forked child under the auditor's resource limits
            from auditor.engine import audit_items
        except ImportError:
            audit_items = None
        if audit_items is not None:
            results, crashed = audit_items(items, Options(), jobs=1)
            if crashed:
                raise RuntimeError("; ".join(c.strip() for c in crashed))
        else:
            results = [analyse(Path(r), Path(e) if e else None, d, f, Options()) for r, e, d, f in items]
        finish(results, items, Settings(), all_rules())
    except Exception as exc:
        return {"verdict": "crash", "errors": [], "warnings": [], "top": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(limit=8), "cpu_s": time.process_time() - t0, "submissions": 0}
    cpu = time.process_time() - t0 + _children_cpu() - c0
    findings = [f for r in results for f in r.findings]
    order = {"pass": 0, "fail": 1, "error": 2}
    verdict = max((r.verdict for r in results), key=order.get, default="error")
    tops = [t for t in (top_finding(r) for r in results) if t is not None]
    top = min(tops, key=lambda f: ({"error": 0, "warning": 1, "note": 2}[f.level], f.rule[:3] not in LEGALITY,
                                    f.rule)) if tops else None
    proof = []
    for r, (root, _e, _d, _f) in zip(results, items):
        for f in r.findings:
            if f.level == "error" or (f.level == "warning" and f.rule.startswith(LEGALITY)):
                proof.append(f"{f.rule} {f.level} {f.file}:{f.line}: {_source_line(Path(root), f)}")
    return {
        "verdict": verdict,
        "proof": proof,
        "errors": sorted({f.rule for f in findings if f.level == "error"}),
        "warnings": sorted({f.rule for f in findings if f.level == "warning"}),
        "top": f"{top.rule} {top.level} {top.file}:{top.line}: {top.message}" if top is not None else "",
        "cpu_s": round(cpu, 3),
        "submissions": len(results),
    }


def _children_cpu() -> float:
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _source_line(root: Path, f) -> str:
    """The line of the folder's own file a finding points at (what proves it), shortened."""
    try:
        lines = (root / f.file).read_text(encoding="utf-8", errors="replace").splitlines()
        text = lines[f.line - 1].strip() if 0 < f.line <= len(lines) else ""
    except (OSError, ValueError):
        text = ""
    return (text[:140] + "...") if len(text) > 140 else text


def legality_error(row: dict) -> bool:
    return any(r.startswith(LEGALITY) for r in row["errors"])


def legality_flag(row: dict) -> bool:
    return any(r.startswith(LEGALITY) for r in row["errors"] + row["warnings"])


def run_corpus(corpus: Path, jobs: int = 2) -> list:
    """[(label entry, result row)] for every labelled folder, in labels.json order."""
    entries = json.loads((corpus / "labels.json").read_text(encoding="utf-8"))
    folders = [str(corpus / e["folder"]) for e in entries]
    missing = [f for f in folders if not Path(f).is_dir()]
    if missing:
        raise SystemExit(f"audit_corpus: labelled folder not found: {missing[0]}")
    if jobs > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=jobs) as ex:
            rows = list(ex.map(_audit_folder, folders, chunksize=1))
    else:
        rows = [_audit_folder(f) for f in folders]
    return list(zip(entries, rows))


def targets(pairs) -> dict:
    by = {c: [row for e, row in pairs if category(e) == c] for c in CATEGORIES}
    ok_rows = by["clean"] + by["accepted"]
    return {
        "illegal_caught": (sum(legality_error(r) for r in by["illegal"]), len(by["illegal"])),
        "clean_with_legality_error": (sum(legality_error(r) for r in ok_rows), len(ok_rows)),
        "clean_gated_pass": (sum(r["verdict"] == "pass" for r in ok_rows), len(ok_rows)),
        "borderline_flagged": (sum(legality_flag(r) for r in by["borderline"]), len(by["borderline"])),
        "crash_or_error_verdict": (sum(r["verdict"] in ("crash", "error") for _e, r in pairs), len(pairs)),
    }


def targets_met(t: dict) -> dict:
    ill, n_ill = t["illegal_caught"]
    clean_err, _ = t["clean_with_legality_error"]
    gated, n_ok = t["clean_gated_pass"]
    border, n_b = t["borderline_flagged"]
    bad, _ = t["crash_or_error_verdict"]
    return {
        "illegal_caught": ill >= n_ill - 2,
        "clean_with_legality_error": clean_err == 0,
        "clean_gated_pass": gated >= n_ok - 4,
        "borderline_flagged": border == n_b,
        "crash_or_error_verdict": bad == 0,
    }


def expectations(pairs) -> dict:
    """Per folder: verdict, error-level rule ids, and the label-derived assertions that hold now (a regression
    test keeps them: a caught illegal folder stays caught, a clean one stays free of legality errors, ...)."""
    out = {}
    for e, row in pairs:
        c = category(e)
        holds = []
        if c == "illegal" and legality_error(row):
            holds.append("legality_error")
        if c in ("clean", "accepted") and not legality_error(row):
            holds.append("no_legality_error")
        if c in ("clean", "accepted") and row["verdict"] == "pass":
            holds.append("pass")
        if c == "borderline" and legality_flag(row):
            holds.append("legality_flag")
        out[e["folder"]] = {"category": c, "verdict": row["verdict"], "errors": row["errors"], "assert": holds}
    totals = {k: list(v) for k, v in targets(pairs).items()}
    return {"corpus": "../shared/submissions", "folders": out, "targets": totals}


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("corpus", type=Path, help="folder with labels.json (../shared/submissions)")
    ap.add_argument("--jobs", "-j", type=int, default=2)
    ap.add_argument("--write-expectations", type=Path, metavar="FILE", help="write the per-folder expectations here")
    ap.add_argument("--json", type=Path, metavar="FILE", help="also write every row as JSON")
    args = ap.parse_args(argv)
    if not (args.corpus / "labels.json").is_file():
        print(f"audit_corpus: {args.corpus}/labels.json not found; expected the submissions corpus", file=sys.stderr)
        return 2
    if args.jobs < 1:
        print(f"audit_corpus: --jobs must be >= 1, got {args.jobs}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    pairs = run_corpus(args.corpus, args.jobs)
    wall = time.perf_counter() - t0
    for e, row in sorted(pairs, key=lambda p: (CATEGORIES.index(category(p[0])), p[0]["folder"])):
        errs = ",".join(row["errors"]) or "-"
        print(f"{category(e):10} {e['folder']:62} {row['verdict']:5} {row['cpu_s']:6.2f}s E={errs:28} "
              f"{row['top'][:110]}")
        if row["verdict"] == "crash":
            print(row["traceback"], file=sys.stderr)
    print()
    print(f"{'category':10} {'n':>3} {'PG4/5 error':>11} {'pass':>5} {'fail':>5} {'error':>5}")
    for c in CATEGORIES:
        rows = [r for e, r in pairs if category(e) == c]
        print(f"{c:10} {len(rows):3d} {sum(legality_error(r) for r in rows):11d} "
              f"{sum(r['verdict'] == 'pass' for r in rows):5d} {sum(r['verdict'] == 'fail' for r in rows):5d} "
              f"{sum(r['verdict'] in ('error', 'crash') for r in rows):5d}")
    print("\nclean/accepted not passing, illegal not caught, borderline without a PG4/PG5 flag "
          "(what the folder's own files show):")
    for e, row in pairs:
        c = category(e)
        miss = ((c in ("clean", "accepted") and row["verdict"] != "pass")
                or (c == "illegal" and not legality_error(row))
                or (c == "borderline" and not legality_flag(row)))
        if miss:
            print(f"  {c} {e['folder']} ({row['verdict']}): " + (e.get("pattern") or ""))
            for p in row.get("proof", [])[:6] or ["(no error-level or PG4/PG5 finding)"]:
                print(f"      {p}")
    t = targets(pairs)
    met = targets_met(t)
    print()
    for k, (a, n) in t.items():
        print(f"target {k:28} {a}/{n}  {'met' if met[k] else 'NOT MET'}")
    cpu = sorted(r["cpu_s"] for _e, r in pairs)
    print(f"\n{len(pairs)} folders, wall {wall:.1f} s with --jobs {args.jobs}; CPU s per submission: median "
          f"{cpu[len(cpu) // 2]:.2f}, max {cpu[-1]:.2f}, total {sum(cpu):.1f}")
    if args.json:
        _write_atomic(args.json, json.dumps([dict(row, folder=e["folder"], category=category(e)) for e, row in pairs],
                                            indent=1) + "\n")
    if args.write_expectations:
        _write_atomic(args.write_expectations, json.dumps(expectations(pairs), indent=1, sort_keys=True) + "\n")
        print(f"wrote {args.write_expectations}")
    return 0 if all(met.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
