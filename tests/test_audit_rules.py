"""Every rule's LEGAL / ILLEGAL examples, run through the real audit.

Registered static rule classes: each ILLEGAL example must get a finding of that rule at every `points_at` location
and no error/warning of that rule anywhere else; each LEGAL example no error/warning of that rule. Code rules
(PG4xx/PG5xx) also run as a 2-line lzma+base85 wrapper (the finding points at the same line of the decoded payload,
file `train_gpt.py#decoded1`, and its message names the exec line) and with the code moved into a helper module
imported by train_gpt.py (same line numbers, in
submission_impl.py).
"""

import base64
import lzma
import re

import pytest

from auditor.engine import audit_paths
from auditor.rules import all_rules, rule_modules
from auditor.rules.base import Example
from auditor.rules.inputs import Link

ENTRY, HELPER = "train_gpt.py", "submission_impl.py"


def _is_code_rule(rid: str) -> bool:
    return rid[:3] in ("PG4", "PG5")


def _variants(files: dict, code: bool) -> list:
    out = ["plain"]
    if code and ENTRY in files:
        out.append("wrapped")
        if set(files) <= {ENTRY, "README.md"}:
            out.append("helper")
    return out


def _class_cases():
    for cls in all_rules().values():
        if cls.kind != "static" or getattr(cls, "legacy_module", None):
            continue
        for legal, examples in ((True, cls.LEGAL), (False, cls.ILLEGAL)):
            for ex in examples:
                for v in _variants(ex.files, _is_code_rule(cls.id)):
                    yield pytest.param(cls.id, legal, ex, v, id=f"{cls.id}-{ex.name}-{v}")


def _wrap(code: str) -> str:
    raw = lzma.compress(code.encode(), format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2}])
    return (
        'import lzma as L,base64 as B\nexec(L.decompress(B.b85decode("%s"),format=L.FORMAT_RAW,'
        'filters=[{"id":L.FILTER_LZMA2}]))\n' % base64.b85encode(raw).decode()
    )


def _helperize(code: str):
    """(new train_gpt.py, helper module): the helper keeps the code's line numbers (only the tail call goes)."""
    body = re.sub(r'\nif __name__ == "__main__":\n    main\(\)\n?$', "\n", code)
    body = re.sub(r"\nmain\(\)\n?$", "\n", body)
    return f'import os\nfrom {HELPER[:-3]} import *\n\nif __name__ == "__main__":\n    main()\n', body


def _run_script(env: dict) -> str:
    assigns = " ".join(f"{k}={v}" for k, v in sorted(env.items()))
    return f"#!/bin/bash\n{assigns} torchrun --standalone --nproc_per_node=8 train_gpt.py\n"


def _materialize(tmp_path, name, files, variant, env=None):
    root = tmp_path / "records" / "track_10min_16mb" / name
    root.mkdir(parents=True)
    files = dict(files)
    if env and "run.sh" not in files:
        files["run.sh"] = _run_script(env)
    if variant == "wrapped":
        files[ENTRY] = _wrap(files[ENTRY])
    elif variant == "helper":
        files[ENTRY], files[HELPER] = _helperize(files[ENTRY])
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, Link):  # PG006 examples: a symlink, not a file
            (root / rel).symlink_to(text)
            continue
        (root / rel).write_text(text, encoding="utf-8")
    return root


def _expected_location(file: str, line: int, variant: str):
    """Where a finding at (file, line) of the plain example appears in `variant`: (file, line, message part)."""
    if file != ENTRY or variant == "plain":
        return file, line, None
    if variant == "helper":
        return HELPER, line, None
    return f"{ENTRY}#decoded1", line, "from train_gpt.py line 2"  # wrapped: the line in the decoded payload


def _show(findings) -> str:
    return "\n".join(f"  {f.rule} [{f.level}] {f.file}:{f.line} {f.message[:160]}" for f in findings)


@pytest.mark.parametrize("rid,legal,example,variant", list(_class_cases()))
def test_rule_class_examples(tmp_path, rid, legal, example, variant):
    root = _materialize(tmp_path, example.name, example.files, variant, example.env)
    result = audit_paths([root])[0]
    if not rid.startswith("PG00"):  # PG001-PG003 examples are, by design, submissions that cannot be analysed
        assert result.verdict != "error", _show(result.findings)
    hits = [f for f in result.findings if f.rule == rid and f.level in ("error", "warning")]
    if legal:
        assert not hits, f"LEGAL {example.name} ({variant}) got:\n" + _show(hits)
        return
    assert hits, f"ILLEGAL {example.name} ({variant}): no {rid} error/warning; got:\n" + _show(result.findings)
    wanted = [_expected_location(file, line, variant) for file, line in example.points_at]
    assert wanted, f"{rid} ILLEGAL example {example.name} has no points_at"

    def matches(f, w):
        return f.file == w[0] and f.line == w[1] and (w[2] is None or w[2] in f.message)

    stray = [f for f in hits if not any(matches(f, w) for w in wanted)]
    assert not stray, f"{rid} findings outside points_at {wanted} ({variant}):\n" + _show(stray)
    missed = [w for w in wanted if not any(matches(f, w) for f in hits)]
    assert not missed, f"{rid} missed {missed} ({variant}); got:\n" + _show(hits)
    for f in hits:
        assert f.col >= 1 and len(f.message) > 40, f.message
    if variant == "helper":
        assert any(f.rule == "PG103" and f.file == HELPER for f in result.findings)


def test_every_rule_is_documented_and_has_examples():
    registry = all_rules()
    assert {"PG001", "PG401", "PG4D1", "PG900"} <= set(registry)
    for rid, cls in registry.items():
        assert cls.id == rid and cls.title and cls.level in ("error", "warning", "note")
        if getattr(cls, "legacy_module", None):  # still a module dict: its module's examples cover it
            assert cls.ILLEGAL, f"{rid}: no ILLEGAL example in {cls.legacy_module}"
            continue
        assert cls.why and cls.fix, f"{rid}: why/fix missing"
        if cls.kind == "static":
            assert cls.LEGAL and cls.ILLEGAL, f"{rid}: needs LEGAL and ILLEGAL examples"
            for ex in cls.ILLEGAL:
                assert isinstance(ex, Example) and ex.points_at, f"{rid}/{ex.name}: needs points_at"
                for file, line in ex.points_at:  # a missing file is pointed at on line 1
                    n = len(ex.files[file].splitlines()) if file in ex.files else 1
                    assert 1 <= line <= max(1, n), f"{rid}/{ex.name}: {file}:{line} is not a line of the example"


def _example(name: str):
    """An example by name, from the rule classes or a legacy module (as {files, env})."""
    for cls in all_rules().values():
        for ex in (*cls.LEGAL, *cls.ILLEGAL):
            if ex.name == name:
                return {"files": dict(ex.files), "env": dict(ex.env)}
    for mod in rule_modules():
        for ex in (*getattr(mod, "LEGAL_EXAMPLES", ()), *getattr(mod, "ILLEGAL_EXAMPLES", ())):
            if ex["name"] == name:
                return {"files": dict(ex["files"]), "env": dict(ex.get("env", {}))}
    pytest.skip(f"example {name} no longer exists")


def test_flag_off_pattern_is_a_note_and_on_is_error(tmp_path):
    off, on = _example("prequant_ft_flag_off"), _example("prequant_ft_on_val_env_switched")
    r_off = audit_paths([_materialize(tmp_path / "a", "off", off["files"], "plain", off["env"])])[0]
    r_on = audit_paths([_materialize(tmp_path / "b", "on", on["files"], "plain", on["env"])])[0]
    notes = [f for f in r_off.findings if f.rule == "PG401"]
    assert notes and all(f.level == "note" for f in notes) and "switched off" in notes[0].message
    assert [f.level for f in r_on.findings if f.rule == "PG401"] == ["error"]


def test_flag_switched_on_by_log_hyperparameters(tmp_path):
    off = _example("prequant_ft_flag_off")
    files = dict(
        off["files"],
        **{
            "train_seed1.log": "Hyperparameters:\n  prequant_ttt: 1\n"
            "step:1/10 train_loss:6.0 train_time:10ms step_avg:10.00ms\n"
            "final_int8_zlib_roundtrip val_loss:2.0 val_bpb:1.2 eval_time:10ms\n"
        },
    )
    r = audit_paths([_materialize(tmp_path, "logon", files, "plain", off["env"])])[0]
    assert [f.level for f in r.findings if f.rule == "PG401"] == ["error"]


def test_registry_runner_does_not_double_report(tmp_path, monkeypatch):
    """A class and a legacy module check that both report an id: the class's findings only."""
    from auditor import rules as R
    from auditor.findings import Finding
    from auditor.rules.base import REGISTRY, Rule

    class Legacy:
        __name__ = "legacy_fake"
        RULES = {"PG777": ("error", "fake")}

        @staticmethod
        def check(ctx):
            return [Finding("PG777", "error", "from the module"), Finding("PG778", "warning", "other id")]

    class PG777(Rule):
        id, level, title = "PG777", "error", "fake"

        def check(self, facts):
            yield self.finding("from the class")

    monkeypatch.setitem(REGISTRY, "PG777", PG777)
    monkeypatch.setattr(R, "rule_modules", lambda: [Legacy])
    ctx = R.AuditContext(sub=None, cfg=None, prog=None)
    monkeypatch.setattr(R, "static_rule_classes", lambda: [PG777])
    got = sorted((f.rule, f.message) for f in R.run_rules(ctx))
    assert got == [("PG777", "from the class"), ("PG778", "other id")]
    calls = []
    assert ctx.memo("k", lambda: calls.append(1) or 5) == 5 and ctx.memo("k", lambda: calls.append(1) or 6) == 5
    assert calls == [1]


def test_docs_rule_table_matches_the_registry():
    """docs/audit.md lists every static rule with the level it is registered with (and nothing else)."""
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "audit.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| (PG\d{3}) \| (error|warning|note) \|", doc, re.M))
    static = {rid: cls.level for rid, cls in all_rules().items() if cls.kind == "static"}
    assert rows == static
