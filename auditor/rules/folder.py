"""PG2xx record folder: required files, submission.json validity and agreement with the logs, the 1500-line
guideline, and enough seed logs for a record claim."""

from __future__ import annotations

from auditor.rules.base import Example, Rule, register
from auditor.rules.size import json_line

MAX_LINES = 1500
_BPB_TOL = 5e-4


def _is_record_track(sub) -> bool:
    js = sub.submission_json if isinstance(sub.submission_json, dict) else {}
    track = str(js.get("track", "")).lower()
    root = str(sub.root).replace("-", "_").lower()
    if "non_record" in root or "non" in track or "record_support" in str(js.get("submission_type", "")):
        return False
    return "track_10min_16mb" in root or track.startswith("10min")


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def json_type(v) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object"}.get(
        type(v), "null"
    )


_LOG = (
    "step:1/20000 train_loss:6.9 train_time:90ms step_avg:90.00ms\n"
    "stopping_early: wallclock_cap train_time:599000ms step:6000/20000\n"
    "Total submission size int8+zlib: 15000000 bytes\n"
    "final_int8_zlib_roundtrip_exact val_loss:1.90000000 val_bpb:{bpb}\nseed:{seed}\n"
)
_JSON = ('{"name": "Example", "github_id": "someone", "author": "Some One", "val_bpb": %s, "bytes_total": 15000000, '
         '"track": "10min_16mb"}')
_FILES = {
    "train_gpt.py": "import torch\nprint('hi')\n",
    "README.md": "# Example\n",
    "submission.json": _JSON % "1.12",
    "train_seed1.log": _LOG.format(bpb="1.12000000", seed=1),
    "train_seed2.log": _LOG.format(bpb="1.12010000", seed=2),
    "train_seed3.log": _LOG.format(bpb="1.11990000", seed=3),
}
_COMPLETE = Example("complete_record_folder", dict(_FILES))


@register
class PG201(Rule):
    id, level, title = "PG201", "error", "required file missing (README.md, submission.json, train log, train_gpt.py)"
    why = ("A record folder ships README.md, submission.json, the training log of every seed and train_gpt.py. A "
           "missing script is an error (nothing to audit); missing metadata or logs are warnings (the maintainers "
           "have accepted records with such gaps).")
    fix = "Add the missing file."
    LEGAL = (_COMPLETE,)
    ILLEGAL = (
        Example("missing_readme", {k: v for k, v in _FILES.items() if k != "README.md"},
                points_at=(("README.md", 1),)),
    )

    def check(self, facts):
        sub = facts.sub
        if not sub.is_folder:
            return
        if sub.entry is None:
            yield self.finding("no train_gpt.py in the folder; a record must ship the script that produced its logs "
                               "and it must run from the records folder.", "train_gpt.py", 1)
        elif sub.entry.name != "train_gpt.py":
            yield self.finding(f"the script is named {sub.entry.name}, not train_gpt.py; the records harness runs "
                               f"train_gpt.py. Rename it.", sub.entry.name, 1, level="warning")
        if sub.readme_rel is None:
            yield self.finding("README.md is missing; explain the submission and its run command.", "README.md", 1,
                               level="warning")
        if sub.submission_json_rel is None:
            yield self.finding("submission.json is missing; it must give name, github_id, val_bpb and related "
                               "metadata.", "submission.json", 1, level="warning")
        if not sub.logs:
            yield self.finding("no training log (*.log / *.txt with training and final metric lines) in the folder; "
                               "ship the log of every seed.", "train.log", 1, level="warning")


@register
class PG202(Rule):
    id, level, title = "PG202", "warning", "submission.json invalid or disagrees with the logs"
    why = ("submission.json is the record's metadata: name, github_id, val_bpb as the logs show it. Metadata gaps are "
           "warnings: the maintainers have accepted records with them.")
    fix = "Fix the JSON so that it parses, has the required keys and reports the logged numbers."
    LEGAL = (_COMPLETE,)
    ILLEGAL = (
        Example("json_bpb_disagrees", dict(_FILES, **{"submission.json": _JSON % "1.10"}),
                points_at=(("submission.json", 1),)),
        Example("json_bpb_disagrees_multiline",
                dict(_FILES, **{"submission.json": (_JSON % "1.10").replace(", ", ",\n")}),
                points_at=(("submission.json", 4),), note="the finding points at the key's line"),
        Example("json_invalid", dict(_FILES, **{"submission.json": '{"name": "x", '}),
                points_at=(("submission.json", 1),)),
    )

    def check(self, facts):
        sub = facts.sub
        js, rel = sub.submission_json, sub.submission_json_rel
        if not sub.is_folder or rel is None:
            return
        if sub.submission_json_error:
            yield self.finding(f"{rel} {sub.submission_json_error}; fix the JSON.", rel, 1)
        elif not isinstance(js, dict):
            yield self.finding(f"{rel} must be a JSON object, got {type(js).__name__}.", rel, 1)
        else:
            yield from self._check_json(sub, js, rel)

    def _check_json(self, sub, js, rel):
        bpb_key = "val_bpb" if "val_bpb" in js else ("mean_val_bpb" if "mean_val_bpb" in js else None)
        missing = [k for k in ("name",) if not isinstance(js.get(k), str) or not js.get(k)]
        if not (isinstance(js.get("github_id"), str) or isinstance(js.get("author"), str)):
            missing.append("github_id")
        if bpb_key is None:
            missing.append("val_bpb")
        if missing:
            yield self.finding(f"{rel} lacks required key(s) {', '.join(missing)} (expected name, github_id, "
                               f"val_bpb); add them.", rel, 1)
        for key, kind in (("val_bpb", "number"), ("val_loss", "number"), ("bytes_total", "int"),
                          ("bytes_code", "int")):
            if key in js:
                v = js[key]
                ok = _num(v) if kind == "number" else (isinstance(v, int) and not isinstance(v, bool))
                if not ok:
                    yield self.finding(f"{rel}: {key} must be {'a number' if kind == 'number' else 'an integer'}, "
                                       f"got {json_type(v)} {v!r:.40}.", rel, json_line(sub, key))
        scored = [(r, i.scored_val_bpb) for r, i in sorted(sub.logs.items()) if i.scored_val_bpb is not None]
        if bpb_key and _num(js.get(bpb_key)) and scored:
            claim = float(js[bpb_key])
            vals = [v for _r, v in scored]
            mean = sum(vals) / len(vals)
            if abs(claim - mean) > _BPB_TOL and all(abs(claim - v) > 5e-5 for v in vals):
                yield self.finding(f"{rel}: {bpb_key} {claim} disagrees with the logs (scored val_bpb "
                                   f"{', '.join(f'{v:.5f}' for v in vals)}; mean {mean:.5f}); report the logged "
                                   f"score.", rel, json_line(sub, bpb_key))
        totals = [i.total_size_bytes for i in sub.logs.values() if i.total_size_bytes is not None]
        bt = js.get("bytes_total")
        if isinstance(bt, int) and not isinstance(bt, bool) and totals and bt not in totals and bt < max(totals):
            yield self.finding(f"{rel}: bytes_total {bt} matches no logged total "
                               f"({', '.join(str(t) for t in sorted(set(totals)))}) and is below the largest; "
                               f"report the logged 'Total submission size' (max over seeds).", rel,
                               json_line(sub, "bytes_total"))


@register
class PG203(Rule):
    id, level, title = "PG203", "warning", "train_gpt.py longer than 1,500 lines"
    why = "The challenge asks for readable scripts of at most 1,500 lines."
    fix = "Trim dead code and unused options."
    LEGAL = (_COMPLETE,)
    ILLEGAL = (
        Example("too_many_lines", dict(_FILES, **{"train_gpt.py": "x = 1\n" * 1501}),
                points_at=(("train_gpt.py", MAX_LINES + 1),)),
    )

    def check(self, facts):
        sub = facts.sub
        entry = sub.entry.name if sub.entry is not None else "train_gpt.py"
        if sub.entry_lines is not None and sub.entry_lines > MAX_LINES:
            yield self.finding(f"{entry} has {sub.entry_lines} lines, over the {MAX_LINES}-line guideline for "
                               f"readable scripts; consider trimming dead code.", entry, MAX_LINES + 1)


@register
class PG204(Rule):
    id, level, title = "PG204", "warning", "fewer than 3 seed logs for a record-track claim"
    why = "Records must show p < 0.01 over the previous SOTA, usually with the logs of 3 seeds."
    fix = "Add the logs of at least 3 seeds."
    LEGAL = (_COMPLETE,)
    ILLEGAL = (
        Example("one_seed_record",
                {k: v for k, v in _FILES.items() if k not in ("train_seed2.log", "train_seed3.log")},
                points_at=(("train_seed1.log", 1),)),
    )

    def check(self, facts):
        sub = facts.sub
        if not (sub.is_folder and _is_record_track(sub) and sub.logs):
            return
        seeds = {info.seed if info.seed is not None else rel for rel, info in sub.logs.items() if info.scored_label}
        if len(seeds) < 3:
            yield self.finding(f"only {len(seeds)} seed log(s) with a final score for a record-track claim; records "
                               f"must show p < 0.01 over the previous SOTA, usually with 3 seeds. Add the logs of at "
                               f"least 3 seeds.", sorted(sub.logs)[0], 1)
