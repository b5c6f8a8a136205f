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


@register
class PG101(Rule):
    id, level, title = "PG101", "error", "total artifact over the byte cap"
    why = ("The artifact (code bytes + compressed model bytes) must be at most 16,000,000 bytes (decimal); the "
           "run's own log prints the counted total.")
    fix = "Shrink the model (fewer/lower-precision weights, better compression) or the code."
    LEGAL = (_FITS,)
    ILLEGAL = (
        Example("over_cap", {"train_gpt.py": _CODE, "train_seed1.log": _log(15_999_900, _N)},
                points_at=(("train_seed1.log", 5),)),
    )

    def check(self, facts):
        sub, cap = facts.sub, facts.max_bytes
        extra = _extra_code(sub)
        shipped = sub.entry_bytes
        accepted = _accepted_code_sizes(sub)
        for rel, info in sorted(sub.logs.items()):
            total = info.total_size_bytes
            line = info.lines.get("total_size", 1)
            if total is not None and total > cap:
                yield self.finding(
                    f"{rel}: logged total submission size is {total} bytes, over the {cap}-byte cap by "
                    f"{total - cap} (seed {info.seed}); the cap is decimal 16,000,000 bytes of code + compressed "
                    f"model. Shrink the model or the code.", rel, line)
                continue
            if shipped is not None and info.code_bytes is not None and info.code_bytes not in accepted:
                if info.model_bytes is not None:
                    real = info.model_bytes + shipped + extra
                    if real > cap:
                        yield self.finding(
                            f"{rel}: model {info.model_bytes} + shipped code {shipped}"
                            f"{' + helper code ' + str(extra) if extra else ''} = {real} bytes, over the "
                            f"{cap}-byte cap by {real - cap}. Shrink the model or the code.",
                            rel, info.lines.get("code_size", 1))
            elif extra and total is not None and total + extra > cap:
                yield self.finding(
                    f"{rel}: logged total {total} + uncounted helper code {extra} = {total + extra} bytes, over "
                    f"the {cap}-byte cap. Inline and shrink.", rel, line)
        js = sub.submission_json_rel
        for key, v in _json_sizes(sub.submission_json):
            if v > cap:
                yield self.finding(
                    f"{js}: {key} is {v} bytes, over the {cap}-byte cap by {v - cap}. Shrink the model or the "
                    f"code.", js, 1)


@register
class PG102(Rule):
    id, level, title = "PG102", "error", "logged code bytes differ from the shipped train_gpt.py"
    why = "Code bytes are the bytes of the committed train_gpt.py; the log must come from the shipped script."
    fix = "Re-run with the shipped file, or commit the file that produced the log."
    LEGAL = (_FITS,)
    ILLEGAL = (
        Example("notional_compressed_code_size",
                {"train_gpt.py": _CODE, "train_seed1.log": _log(15_990_000, 300, True)},
                points_at=(("train_seed1.log", 5),)),
    )

    def check(self, facts):
        sub = facts.sub
        shipped = sub.entry_bytes
        if shipped is None:
            return
        entry = sub.entry.name if sub.entry is not None else "train_gpt.py"
        accepted = _accepted_code_sizes(sub)
        for rel, info in sorted(sub.logs.items()):
            if info.code_bytes is None or info.code_bytes in accepted:
                continue
            if info.code_bytes_compressed is not None:
                msg = (f"{rel}: the total counts a 'compressed' code size of {info.code_bytes} bytes (a minified, "
                       f"compressed copy that is not what ships), but the shipped {entry} is {shipped} bytes; code "
                       f"bytes are the bytes of the committed train_gpt.py. Ship the wrapper you measured, or count "
                       f"the file you ship.")
            else:
                msg = (f"{rel}: logged code size is {info.code_bytes} bytes but the shipped {entry} is {shipped} "
                       f"bytes; the log must come from the committed script. Re-run with the shipped file or commit "
                       f"the file that produced the log.")
            yield self.finding(msg, rel, info.lines.get("code_size", 1))


@register
class PG103(Rule):
    id, level, title = "PG103", "error", "counted code outside train_gpt.py"
    why = "All code the run executes counts toward the artifact and must live in train_gpt.py."
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
        sub = facts.sub
        for u in sub.helper_units():
            yield self.finding(
                f"{u.rel} ({u.size_bytes} bytes) is executed by the run "
                f"({u.layers[0] if u.layers else 'imported'}) but is not part of train_gpt.py, so its bytes are not "
                f"counted; all counted code must live in train_gpt.py. Inline it into train_gpt.py and re-measure "
                f"the artifact.", u.rel, 1)
        for rel, size in sorted(sub.referenced_code.items()):
            yield self.finding(
                f"{rel} ({size} bytes) is code the run loads (referenced by name in the script) but it is not part "
                f"of train_gpt.py; its bytes are not counted. Inline it or count it in the artifact.", rel, 1)
