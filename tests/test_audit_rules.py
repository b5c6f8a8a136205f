"""Every static rule's LEGAL_EXAMPLES / ILLEGAL_EXAMPLES, also as a 2-line lzma+base85 wrapper and with the code
moved into a helper module imported by train_gpt.py (legality/data rules)."""

import base64
import lzma
import re

import pytest

from auditor.engine import audit_paths
from auditor.rules import rule_modules

CODE_RULE_MODULES = ("legality", "data")


def _cases():
    for mod in rule_modules():
        short = mod.__name__.rsplit(".", 1)[-1]
        for kind in ("LEGAL_EXAMPLES", "ILLEGAL_EXAMPLES"):
            for ex in getattr(mod, kind):
                variants = ["plain"]
                if short in CODE_RULE_MODULES and "train_gpt.py" in ex["files"]:
                    variants += ["wrapped"]
                    if len(ex["files"]) == 1 or set(ex["files"]) <= {"train_gpt.py", "README.md"}:
                        variants += ["helper"]
                for v in variants:
                    yield pytest.param(short, kind == "LEGAL_EXAMPLES", ex, v, id=f"{short}-{ex['name']}-{v}")


def _wrap(code: str) -> str:
    raw = lzma.compress(code.encode(), format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2}])
    return (
        'import lzma as L,base64 as B\nexec(L.decompress(B.b85decode("%s"),format=L.FORMAT_RAW,'
        'filters=[{"id":L.FILTER_LZMA2}]))\n' % base64.b85encode(raw).decode()
    )


def _helperize(code: str):
    body = re.sub(r'\nif __name__ == "__main__":\n    main\(\)\n?', "\n", code)
    body = re.sub(r"\nmain\(\)\n?$", "\n", body)
    return 'import os\nfrom submission_impl import *\n\nif __name__ == "__main__":\n    main()\n', body


def _materialize(tmp_path, ex, variant):
    root = tmp_path / "records" / "track_10min_16mb" / ex["name"]
    root.mkdir(parents=True)
    files = dict(ex["files"])
    if variant == "wrapped":
        files["train_gpt.py"] = _wrap(files["train_gpt.py"])
    elif variant == "helper":
        files["train_gpt.py"], files["submission_impl.py"] = _helperize(files["train_gpt.py"])
    for name, text in files.items():
        (root / name).write_text(text, encoding="utf-8")
    return root


@pytest.mark.parametrize("module,legal,example,variant", list(_cases()))
def test_rule_examples(tmp_path, module, legal, example, variant):
    root = _materialize(tmp_path, example, variant)
    result = audit_paths([root])[0]
    assert result.verdict != "error", [f.message for f in result.findings]
    wanted = set(example["rules"])
    hits = [f for f in result.findings if f.rule in wanted and f.level in ("error", "warning")]
    if legal:
        assert not hits, "\n".join(f"{f.rule} {f.file}:{f.line} {f.message}" for f in hits)
    else:
        assert hits, f"expected one of {sorted(wanted)}; got " + "; ".join(
            f"{f.rule}:{f.level}" for f in result.findings
        )
        for f in hits:
            assert f.line >= 1 and f.col >= 1 and len(f.message) > 40
            if variant == "wrapped" and f.file == "train_gpt.py":
                assert f.line == 2 and "decoded payload" in f.message
    if variant == "helper":
        assert any(f.rule == "PG103" and f.file == "submission_impl.py" for f in result.findings)


def test_flag_off_pattern_is_a_note_and_on_is_error(tmp_path):
    from auditor.rules.legality import ILLEGAL_EXAMPLES, LEGAL_EXAMPLES

    off = next(e for e in LEGAL_EXAMPLES if e["name"] == "prequant_ft_flag_off")
    on = next(e for e in ILLEGAL_EXAMPLES if e["name"] == "prequant_ft_on_val_env_switched")
    r_off = audit_paths([_materialize(tmp_path / "a", off, "plain")])[0]
    r_on = audit_paths([_materialize(tmp_path / "b", on, "plain")])[0]
    notes = [f for f in r_off.findings if f.rule == "PG401"]
    assert notes and all(f.level == "note" for f in notes) and "switched off" in notes[0].message
    assert [f.level for f in r_on.findings if f.rule == "PG401"] == ["error"]


def test_flag_switched_on_by_log_hyperparameters(tmp_path):
    from auditor.rules.legality import LEGAL_EXAMPLES

    off = dict(next(e for e in LEGAL_EXAMPLES if e["name"] == "prequant_ft_flag_off"))
    off["files"] = dict(
        off["files"],
        **{
            "train_seed1.log": "Hyperparameters:\n  prequant_ttt: 1\n"
            "step:1/10 train_loss:6.0 train_time:10ms step_avg:10.00ms\n"
            "final_int8_zlib_roundtrip val_loss:2.0 val_bpb:1.2 eval_time:10ms\n"
        },
    )
    r = audit_paths([_materialize(tmp_path, off, "plain")])[0]
    assert [f.level for f in r.findings if f.rule == "PG401"] == ["error"]


def test_every_rule_has_legal_and_illegal_examples():
    for mod in rule_modules():
        covered_bad = {r for ex in mod.ILLEGAL_EXAMPLES for r in ex["rules"]}
        assert set(mod.RULES) <= covered_bad, (mod.__name__, set(mod.RULES) - covered_bad)
        assert mod.LEGAL_EXAMPLES
