"""Property-based: mutated real-looking submissions (code, wrappers, logs, submission.json) never crash the
auditor; every outcome is a verdict with well-formed findings."""

import base64
import lzma
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditor.engine import audit_paths
from auditor.logs import parse_log
from auditor.rules import all_rules
from auditor.rules.legality import ILLEGAL_EXAMPLES, LEGAL_EXAMPLES

SOURCES = [e["files"]["train_gpt.py"] for e in LEGAL_EXAMPLES + ILLEGAL_EXAMPLES]
FOLDER_FILES = dict(all_rules()["PG201"].LEGAL[0].files)  # a complete record folder
LOG = (Path(__file__).parent / "fixtures" / "audit" / "logs" / "family_a_seed1337.log").read_text()
SETTINGS = settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)


def _wrap(code: str) -> str:
    raw = lzma.compress(code.encode(), format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2}])
    return (
        'import lzma as L,base64 as B\nexec(L.decompress(B.b85decode("%s"),format=L.FORMAT_RAW,'
        'filters=[{"id":L.FILTER_LZMA2}]))\n' % base64.b85encode(raw).decode()
    )


@st.composite
def mutated(draw, text):
    ops = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["delete", "insert", "dup", "swap", "truncate"]),
                st.integers(0, 10**6),
                st.integers(0, 400),
                st.text(max_size=12),
            ),
            max_size=4,
        )
    )
    for op, pos, n, ins in ops:
        if not text:
            break
        p = pos % len(text)
        if op == "delete":
            text = text[:p] + text[p + n :]
        elif op == "insert":
            text = text[:p] + ins + text[p:]
        elif op == "dup":
            text = text[:p] + text[p : p + n] + text[p:]
        elif op == "swap":
            lines = text.splitlines(True)
            i, j = p % len(lines), (p + n) % len(lines)
            lines[i], lines[j] = lines[j], lines[i]
            text = "".join(lines)
        else:
            text = text[:p]
    return text


def _check(result):
    assert result.verdict in ("pass", "fail", "error")
    for f in result.findings:
        assert f.rule.startswith("PG") and f.level in ("error", "warning", "note")
        assert f.line >= 1 and f.col >= 1 and f.message
    assert not any(f.rule == "PG000" for f in result.findings)


@SETTINGS
@given(data=st.data(), idx=st.integers(0, len(SOURCES) - 1), wrap=st.booleans())
def test_mutated_code_never_crashes(tmp_path_factory, data, idx, wrap):
    src = data.draw(mutated(SOURCES[idx]))
    root = tmp_path_factory.mktemp("sub")
    files = dict(FOLDER_FILES)
    files["train_gpt.py"] = _wrap(src) if wrap else src
    for k, v in files.items():
        (root / k).write_text(v)
    _check(audit_paths([root])[0])


@SETTINGS
@given(data=st.data())
def test_corrupted_wrapper_payload_never_crashes(tmp_path_factory, data):
    wrapped = _wrap(SOURCES[0])
    start = wrapped.index('b85decode("') + 11
    p = data.draw(st.integers(start, len(wrapped) - 60))
    bad = wrapped[:p] + data.draw(st.sampled_from(["~", "0", "", "zz", '"'])) + wrapped[p + 1 :]
    root = tmp_path_factory.mktemp("w")
    (root / "train_gpt.py").write_text(bad)
    _check(audit_paths([root / "train_gpt.py"])[0])


@SETTINGS
@given(data=st.data())
def test_mutated_logs_and_json_never_crash(tmp_path_factory, data):
    log = data.draw(mutated(LOG))
    info = parse_log(log, "train_seed1.log")
    assert info.seed is None or isinstance(info.seed, int)
    root = tmp_path_factory.mktemp("l")
    files = dict(FOLDER_FILES)
    files["train_seed1.log"] = log
    files["submission.json"] = data.draw(mutated(files["submission.json"]))
    for k, v in files.items():
        (root / k).write_text(v)
    _check(audit_paths([root])[0])


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_as_log(blob):
    parse_log(blob.decode("utf-8", errors="replace"))
