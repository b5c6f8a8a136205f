"""PG1xx size: the artifact cap, logged code bytes vs the shipped train_gpt.py, code outside train_gpt.py."""

from __future__ import annotations

from auditor.rules.base import Example, Rule, register


def _json_sizes(obj) -> list:
    """(label, bytes) sizes claimed by submission.json (bytes_total, artifact_bytes*, seed_results[*])."""
    out = []
    if not isinstance(obj, dict):
        return out
    for key in ("bytes_total", "artifact_bytes", "artifact_size_bytes", "artifact_bytes_max"):
        v = obj.get(key)
        if isinstance(v, int) and not isinstance(v, bool):
            out.append((key, v))
    sr = obj.get("seed_results")
    if isinstance(sr, dict):
        for seed, r in sr.items():
            if isinstance(r, dict):
                v = r.get("artifact_bytes", r.get("bytes_total"))
                if isinstance(v, int) and not isinstance(v, bool):
                    out.append((f"seed_results.{seed}.artifact_bytes", v))
    return out


def _extra_code(sub) -> int:
    """Bytes of code the run executes outside train_gpt.py (helper modules, files loaded by name)."""
    return sum(u.size_bytes for u in sub.helper_units()) + sum(sub.referenced_code.values())


def _accepted_code_sizes(sub) -> set:
    # `len(Path(__file__).read_text().encode())` sees CRLF as LF: both counts describe the shipped file
    accepted = {sub.entry_bytes}
    if sub.entry_unit is not None:
        accepted.add(len(sub.entry_unit.text.replace("\r\n", "\n").encode("utf-8")))
    return accepted


def json_line(sub, key: str) -> int:
    """1-based line of `"key"` in the submission's JSON file (1 when absent or unreadable): findings about a key
    point at it."""
    rel = sub.submission_json_rel
    if rel is None or not isinstance(key, str):
        return 1
    try:
        text = sub.reader.read_bytes(rel, 1 << 20).decode("utf-8", errors="replace")
    except Exception:
        return 1
    needle = f'"{key}"'
    for i, line in enumerate(text.splitlines(), 1):
        if needle in line:
            return i
    return 1


_CODE = """import os, lzma, torch
code = open(__file__, encoding="utf-8").read()
def main():
    blob = lzma.compress(b"")
    print(f"Serialized model int6+lzma: {len(blob)} bytes")
    print(f"Code size: {len(code.encode())} bytes")
main()
"""


def _log(model, code, compressed=False):
    code_line = (
        f"Code size (uncompressed): {code * 4} bytes\nCode size (compressed): {code} bytes"
        if compressed
        else f"Code size: {code} bytes"
    )
    return (
        f"step:1/20000 train_loss:6.9 train_time:100ms step_avg:100.00ms\n"
        f"stopping_early: wallclock_cap train_time:599000ms step:7000/20000\n"
        f"Serialized model int6+lzma: {model} bytes\n{code_line}\n"
        f"Total submission size int6+lzma: {model + code} bytes\n"
        f"final_int6_roundtrip_exact val_loss:1.90000000 val_bpb:1.12000000\n"
    )


_N = len(_CODE.encode())
_FITS = Example("fits_and_code_bytes_match", {"train_gpt.py": _CODE, "train_seed1.log": _log(15_900_000, _N)})


def _logs_list(items) -> str:
    """`a.log (x), b.log (y)` for a finding that lists every log sharing one root cause."""
    return ", ".join(f"{rel} ({what})" for rel, what in items)


@register
class PG101(Rule):
    id, level, title = "PG101", "error", "total artifact over the byte cap"
    why = ("The artifact (code bytes + compressed model bytes) must be at most 16,000,000 bytes (decimal); the "
           "maintainers reject a record whose own log prints a larger `Total submission size`.")
    fix = "Shrink the model (fewer/lower-precision weights, better compression) or the code."
    LEGAL = (_FITS,)
    ILLEGAL = (
        Example("over_cap", {"train_gpt.py": _CODE, "train_seed1.log": _log(15_999_900, _N)},
                points_at=(("train_seed1.log", 5),)),
        Example("over_cap_every_seed_is_one_finding",
                {"train_gpt.py": _CODE, "train_seed1.log": _log(15_999_900, _N),
                 "train_seed2.log": _log(15_999_950, _N)},
                points_at=(("train_seed1.log", 5),), note="one root cause in every log: one finding listing them"),
        Example("json_claims_over_cap", {"train_gpt.py": _CODE, "submission.json": '{\n  "name": "x",\n'
                                         '  "bytes_total": 16000100\n}\n'},
                points_at=(("submission.json", 3),), note="no log: the metadata claim is a warning"),
    )

    def check(self, facts):
        sub, cap = facts.sub, facts.max_bytes
        over = [(rel, info) for rel, info in sorted(sub.logs.items())
                if info.total_size_bytes is not None and info.total_size_bytes > cap]
        if over:
            rel, info = over[0]
            worst = max(i.total_size_bytes for _r, i in over)
            yield self.finding(
                f"the run's own log prints a total submission size over the {cap}-byte cap: "
                f"{_logs_list((r, f'{i.total_size_bytes} bytes, seed {i.seed}') for r, i in over)}; over by up to "
                f"{worst - cap} bytes. The cap is decimal 16,000,000 bytes of code + compressed model. Shrink the "
                f"model or the code.", rel, info.lines.get("total_size", 1),
                evidence={"logs": [r for r, _i in over], "max_total_bytes": worst})
            return
        js = sub.submission_json_rel
        claims = [(k, v) for k, v in _json_sizes(sub.submission_json) if v > cap]
        if claims:
            key, v = claims[0]
            yield self.finding(
                f"{js}: {key} is {v} bytes, over the {cap}-byte cap by {v - cap}, but no training log shows a total "
                f"over the cap; fix the metadata or shrink the artifact.", js, json_line(sub, key.split('.')[0]),
                level="warning")


@register
class PG102(Rule):
    id, level, title = "PG102", "warning", "logged code bytes differ from the shipped train_gpt.py"
    why = ("Code bytes are the bytes of the committed train_gpt.py; a log whose code size differs comes from another "
           "version of the script, or counts a compressed copy (accepted records from April 2026 on do this: the "
           "maintainers accept it, so it is reported, not failed).")
    fix = "Re-run with the shipped file, or commit the file that produced the log (or ship the compressed wrapper)."
    LEGAL = (_FITS,)
    ILLEGAL = (
        Example("notional_compressed_code_size",
                {"train_gpt.py": _CODE, "train_seed1.log": _log(15_990_000, 300, True),
                 "train_seed2.log": _log(15_990_100, 300, True)},
                points_at=(("train_seed1.log", 5),), note="counted compressed copy: one warning listing the logs"),
        Example("log_from_another_version", {"train_gpt.py": _CODE, "train_seed1.log": _log(15_000_000, _N + 7)},
                points_at=(("train_seed1.log", 4),)),
    )

    def check(self, facts):
        sub, cap = facts.sub, facts.max_bytes
        shipped = sub.entry_bytes
        if shipped is None:
            return
        entry = sub.entry.name if sub.entry is not None else "train_gpt.py"
        accepted = _accepted_code_sizes(sub)
        extra = _extra_code(sub)
        compressed, plain = [], []
        for rel, info in sorted(sub.logs.items()):
            if info.code_bytes is None or info.code_bytes in accepted:
                continue
            (compressed if info.code_bytes_compressed is not None else plain).append((rel, info))
        if compressed:
            rel, info = compressed[0]
            computed = [(r, i.model_bytes + shipped + extra) for r, i in compressed if i.model_bytes is not None]
            worst = max((t for _r, t in computed), default=None)
            size = (f"; computed with the shipped file: model + {shipped}"
                    f"{' + helper code ' + str(extra) if extra else ''} = up to {worst} bytes"
                    f"{f', over the {cap}-byte cap by {worst - cap}' if worst > cap else ''}"
                    if worst is not None else "")
            yield self.finding(
                f"the logged total counts a compressed copy of the script ({info.code_bytes} bytes), not the shipped "
                f"{entry} ({shipped} bytes): {_logs_list((r, f'{i.code_bytes} bytes') for r, i in compressed)}"
                f"{size}. Ship the compressed wrapper you measured, or count the file you ship.",
                rel, info.lines.get("code_size", 1),
                evidence={"logs": [r for r, _i in compressed], "shipped_bytes": shipped,
                          "computed_total_bytes": worst})
        if plain:
            rel, info = plain[0]
            yield self.finding(
                f"logged code size differs from the shipped {entry} ({shipped} bytes): "
                f"{_logs_list((r, f'{i.code_bytes} bytes') for r, i in plain)}; the logs come from another version "
                f"of the script. Re-run with the shipped file or commit the file that produced the logs.",
                rel, info.lines.get("code_size", 1), evidence={"logs": [r for r, _i in plain],
                                                                "shipped_bytes": shipped})


@register
class PG103(Rule):
    id, level, title = "PG103", "warning", "counted code outside train_gpt.py"
    why = "All code the run executes counts toward the artifact and should live in train_gpt.py."
    fix = "Inline the helper into train_gpt.py and re-measure the artifact."
    LEGAL = (_FITS,)
    ILLEGAL = (
        Example("helper_file_exec", {
            "train_gpt.py": 'exec(open(__file__.replace("train_gpt.py", "train_gpt_decode.py")).read())\n',
            "train_gpt_decode.py": _CODE}, points_at=(("train_gpt_decode.py", 1),)),
        Example("sibling_module_import", {"train_gpt.py": "import ngram_tilt\n" + _CODE,
                                          "ngram_tilt.py": "def tilt(x):\n    return x\n"},
                points_at=(("ngram_tilt.py", 1),)),
    )

    def check(self, facts):
        sub, cap = facts.sub, facts.max_bytes
        extra = _extra_code(sub)
        totals = [i.total_size_bytes for i in sub.logs.values() if i.total_size_bytes is not None]
        tail = ""
        if extra and totals:
            t = max(totals) + extra
            tail = (f" With it the largest logged total is {max(totals)} + {extra} = {t} bytes"
                    f"{f', over the {cap}-byte cap by {t - cap}' if t > cap else ''}.")
        for u in sub.helper_units():
            yield self.finding(
                f"{u.rel} ({u.size_bytes} bytes) is executed by the run "
                f"({u.layers[0] if u.layers else 'imported'}) but is not part of train_gpt.py, so its bytes are not "
                f"counted; all counted code must live in train_gpt.py. Inline it into train_gpt.py and re-measure "
                f"the artifact.{tail}", u.rel, 1)
        for rel, size in sorted(sub.referenced_code.items()):
            yield self.finding(
                f"{rel} ({size} bytes) is code the run loads (referenced by name in the script) but it is not part "
                f"of train_gpt.py; its bytes are not counted. Inline it or count it in the artifact.{tail}", rel, 1)
