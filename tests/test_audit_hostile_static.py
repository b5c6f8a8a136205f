"""The static auditor on hostile input: links and special files, huge and deeply nested files, decompression and
exec trees, pgolf's own wrappers, code libcst rejects, and a fuzz over mutated real records.

Each test asserts what the audit reports, that it finishes within a bound, and (for links) that a planted canary
secret appears nowhere in the text / json / sarif report or on stderr."""

from __future__ import annotations

import base64
import json
import lzma
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditor import fsread
from auditor.engine import Options, audit_items, audit_paths
from auditor.isolate import Limits, map_isolated
from auditor.rules import all_rules
from auditor.source import discover

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "submissions"
FIXTURES = Path(__file__).parent / "fixtures" / "hostile"
CANARY = "PGOLF_CANARY_7f3a9c1e5b"
OK_CODE = 'import os\n\n\ndef main():\n    print(os.environ.get("SEED", "1337"))\n\n\nmain()\n'


def _folder() -> dict:
    return dict(all_rules()["PG201"].LEGAL[0].files)  # a complete record folder


def _write(root: Path, files: dict) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for k, v in files.items():
        (root / k).parent.mkdir(parents=True, exist_ok=True)
        (root / k).write_text(v)
    return root


def _audit(paths, jobs=1):
    items = [(str(r), str(e) if e else None, d, f) for r, e, d, f in discover(paths)]
    return audit_items(items, Options(), jobs=jobs)


def _cli(args, env_extra=None, timeout=120):
    env = dict(os.environ, OMP_NUM_THREADS="1", **(env_extra or {}))
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "pgolf", "audit", "--no-progress", *map(str, args)], capture_output=True,
                       text=True, env=env, timeout=timeout, cwd=REPO)
    return p, time.monotonic() - t0


# -- links and special files --------------------------------------------------------------------------------------


@pytest.fixture
def hostile_tree(tmp_path):
    """A tree of record folders, one attack each; `outside/` holds a canary the audit must never read."""
    outside = tmp_path / "outside"
    _write(outside, {"secret.txt": f"TOKEN={CANARY}\n", "canary.py": f'print("{CANARY}")\n',
                     "logs/train_seed9.log": f"step:1/10 val_bpb:{CANARY}\n"})
    recs = tmp_path / "records"
    cases = {
        "environ_json": ("submission.json", "/proc/self/environ"),
        "environ_other_json": ("penv.json", "/proc/self/environ"),
        "environ_readme": ("README.md", "/proc/self/environ"),
        "outside_readme": ("README.md", str(outside / "secret.txt")),
        "dotenv_readme": ("README.md", ".env"),
        "zero_log": ("train_seed1.log", "/dev/zero"),
        "entry_outside": ("train_gpt.py", str(outside / "canary.py")),
        "helper_outside": ("submission_impl.py", str(outside / "canary.py")),
        "dir_link": ("logs", str(outside / "logs")),
    }
    for name, (rel, target) in cases.items():
        files = _folder()
        files.pop(rel, None)
        if name == "dotenv_readme":
            files[".env"] = f"API_KEY={CANARY}\n"
        if name == "helper_outside":
            files["train_gpt.py"] = "from submission_impl import *\n" + OK_CODE
        root = _write(recs / name, files)
        os.symlink(target, root / rel)
    fifo = _write(recs / "fifo_log", _folder())
    os.mkfifo(fifo / "train_seed7.log")
    return recs, cases


def test_links_and_special_files_reported_never_followed(hostile_tree):
    recs, cases = hostile_tree
    env = {"PGOLF_AUDIT_CANARY": CANARY}  # in the auditor's own /proc/self/environ
    outs = {}
    for fmt in ("json", "text", "sarif"):
        p, secs = _cli(["--format", fmt, "--jobs", "2", recs], env)
        assert p.returncode == 1, p.stderr[-2000:]
        assert secs < 90, f"{fmt}: {secs:.1f} s"
        assert CANARY not in p.stdout and CANARY not in p.stderr, f"canary leaked into the {fmt} report"
        outs[fmt] = p.stdout
    report = {Path(s["path"]).name: s for s in json.loads(outs["json"])["submissions"]}
    for name, (rel, _target) in cases.items():
        pg006 = [f for f in report[name]["findings"] if f["rule"] == "PG006"]
        assert [f["file"] for f in pg006] == [rel], (name, report[name]["findings"])
        assert "symlink" in pg006[0]["message"] and "not followed" in pg006[0]["message"]
    assert report["entry_outside"]["verdict"] == "error"  # the code is not readable: cannot pass
    assert report["helper_outside"]["metrics"]["helper_files"] == []
    fifo = [f for f in report["fifo_log"]["findings"] if f["rule"] == "PG006"]
    assert fifo and "FIFO" in fifo[0]["message"]
    sarif = json.loads(outs["sarif"])
    assert any(r["ruleId"] == "PG006" for run in sarif["runs"] for r in run["results"])


def test_symlinked_folder_in_a_tree_is_not_discovered(tmp_path):
    real = _write(tmp_path / "elsewhere" / "rec", _folder())
    tree = tmp_path / "tree"
    tree.mkdir()
    os.symlink(real, tree / "linked")
    _write(tree / "own", _folder())
    found = [Path(d).name for _r, _e, d, _f in discover([tree])]
    assert found == ["own"]


def test_reader_refuses_links_in_the_middle_of_a_path(tmp_path):
    _write(tmp_path / "out", {"x.py": "print(1)\n"})
    root = tmp_path / "rec"
    root.mkdir()
    os.symlink(tmp_path / "out", root / "pkg")
    r = fsread.FolderReader(root)
    with pytest.raises(fsread.Refused) as exc:
        r.read_bytes("pkg/x.py")
    assert exc.value.kind == "symlink"
    with pytest.raises(fsread.Refused):
        r.read_bytes("../out/x.py")
    assert r.walk() == [] and set(r.refused) == {"pkg"}


# -- sizes and counts ---------------------------------------------------------------------------------------------


def test_huge_files_are_not_read(tmp_path):
    root = _write(tmp_path / "rec", _folder())
    with open(root / "train_gpt.py", "w") as fh:  # over the 4 MiB source cap
        fh.write("x = 1\n" * 800_000)
    with open(root / "train_seed4.log", "wb") as fh:  # sparse: 40 GB of nothing, over the per-file cap
        fh.truncate(40 * 10**9)
    t0 = time.monotonic()
    r = audit_paths([root])[0]
    assert time.monotonic() - t0 < 30
    assert r.verdict == "error"
    pg001 = {f.file: f for f in r.findings if f.rule == "PG001"}
    assert "over the" in pg001["train_gpt.py"].message and "train_seed4.log" in pg001


def test_file_count_and_total_byte_caps(tmp_path, monkeypatch):
    root = _write(tmp_path / "rec", _folder())
    for i in range(60):
        (root / f"notes{i:02d}.md").write_text("x")
    monkeypatch.setattr(fsread, "MAX_ENTRIES", 40)
    r = audit_paths([root])[0]
    assert any(f.rule == "PG006" and "more than 40 files" in f.message for f in r.findings)
    reader = fsread.FolderReader(root, max_total_bytes=100, max_entries=1000)
    with pytest.raises(fsread.Refused) as exc:
        for e in reader.walk():
            reader.read_bytes(e.rel)
    assert exc.value.kind == "budget"


# -- parser crashes and hangs ---------------------------------------------------------------------------------------


def _wrap(code: str) -> str:
    raw = lzma.compress(code.encode(), format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2}])
    return ('import lzma as L,base64 as B\nexec(L.decompress(B.b85decode("%s"),format=L.FORMAT_RAW,'
            'filters=[{"id":L.FILTER_LZMA2}]))\n' % base64.b85encode(raw).decode())


@pytest.mark.parametrize("jobs", [1, 2])
def test_deep_nesting_is_a_finding_not_a_dead_job(tmp_path, jobs):
    deep = {
        "brackets": "x = " + "[" * 1500 + "]" * 1500 + "\n",
        "unary": "x = " + "-" * 100_000 + "1\n",
        "wrapped_brackets": _wrap("y = " + "(" * 1500 + "1" + ")" * 1500 + "\n"),
        "calls": "x = " + "f(" * 1000 + ")" * 1000 + "\n",
    }
    for name, code in deep.items():
        _write(tmp_path / "t" / name, dict(_folder(), **{"train_gpt.py": code}))
    _write(tmp_path / "t" / "fine", _folder())
    t0 = time.monotonic()
    results, crashed = _audit([tmp_path / "t"], jobs=jobs)
    assert time.monotonic() - t0 < 60
    assert not crashed
    by = {Path(r.path).name: r for r in results}
    for name in deep:
        assert by[name].verdict == "error", (name, by[name].findings)
        assert any(f.rule == "PG002" for f in by[name].findings), name
    assert by["fine"].verdict == "pass"


def test_isolation_turns_crashes_and_limits_into_outcomes():
    import ctypes

    def work(kind):
        if kind == "segv":
            ctypes.string_at(0)
        if kind == "memory":
            return len(bytearray(3 << 30))
        if kind == "cpu":
            while True:
                pass
        if kind == "hang":
            time.sleep(60)
        if kind == "bug":
            raise KeyError("oops")
        return kind

    t0 = time.monotonic()
    segv, memory, cpu, bug, ok = map_isolated(work, ["segv", "memory", "cpu", "bug", "ok"], jobs=2,
                                              limits=Limits(memory_bytes=1 << 30, cpu_seconds=1, wall_seconds=60))
    (hang,) = map_isolated(work, ["hang"], limits=Limits(wall_seconds=2))
    assert time.monotonic() - t0 < 40
    assert "SIGSEGV" in segv.limit
    assert "memory" in memory.limit
    assert "CPU" in cpu.limit
    assert "wall" in hang.limit
    assert bug.error == "KeyError: 'oops'" and "Traceback" in bug.traceback
    assert ok.ok and ok.value == "ok"


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_internal_error_is_exit_2_with_one_line(tmp_path, monkeypatch, capsys, jobs):
    from auditor import engine
    from pgolf.cli import main

    _write(tmp_path / "t" / "a", _folder())
    _write(tmp_path / "t" / "b", _folder())

    def boom(*a, **k):
        raise ValueError("synthetic failure\nsecond line")

    monkeypatch.setattr(engine, "analyse", boom)  # inherited by the forked children
    monkeypatch.delenv("PGOLF_DEBUG", raising=False)
    rc = main(["audit", "--no-progress", "--format", "json", "--jobs", jobs, str(tmp_path / "t")])
    err = capsys.readouterr().err
    assert rc == 2
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 2 and all("internal error" in x and "ValueError: synthetic failure" in x for x in lines)


# -- decoding trees -------------------------------------------------------------------------------------------------


def test_nested_lzma_bomb_is_capped_across_the_tree(tmp_path):
    leaf = "x = 1\n#" + "a" * 7_000_000 + "\n"  # ~1 KB compressed, 7 MB decoded
    level = leaf
    for _ in range(3):  # each level executes 6 variants of the level below: 6**3 distinct leaves of 7 MB
        execs = [_wrap(f"{level}#{i}\n").splitlines(True)[1] for i in range(6)]
        level = "import lzma as L,base64 as B\n" + "".join(execs)
    root = _write(tmp_path / "bomb", {"train_gpt.py": level})
    assert (root / "train_gpt.py").stat().st_size < 64_000
    t0 = time.monotonic()
    results, crashed = _audit([root / "train_gpt.py"])
    assert time.monotonic() - t0 < 60 and not crashed
    r = results[0]
    assert r.metrics.get("decoded_units", 0) <= 32
    assert any(f.rule == "PG003" and ("total" in f.message or "decoded payloads" in f.message) for f in r.findings)


def test_exec_compile_tree_is_decoded_and_analysed(tmp_path):
    code = OK_CODE
    for i in range(4):
        blob = base64.b85encode(lzma.compress(code.encode())).decode()
        code = (f"import lzma,base64\ns{i}=lzma.decompress(base64.b85decode('{blob}')).decode()\n"
                f"f{i}=__file__+'::decoded.py'\nexec(compile(s{i},f{i},'exec'))\n")
    root = _write(tmp_path / "rec", dict(_folder(), **{"train_gpt.py": code}))
    r = audit_paths([root])[0]
    assert r.metrics["decoded_units"] == 4
    assert not [f for f in r.findings if f.rule in ("PG002", "PG003")], r.findings
    assert r.verdict == "pass", [(f.rule, f.message) for f in r.findings]


def _illegal_example(rid: str):
    ex = all_rules()[rid].ILLEGAL[0]
    (file, line), = [p for p in ex.points_at if p[0] == "train_gpt.py"][:1]
    return ex, line


@pytest.mark.parametrize("method", ["lzma", "brotli"])
def test_pgolf_own_wrappers_are_decoded_and_findings_point_into_the_payload(tmp_path, method):
    pytest.importorskip("python_minifier")
    from builder.wrap import wrap

    ex, line = _illegal_example("PG401")
    files = dict(ex.files)
    files["train_gpt.py"] = wrap(files["train_gpt.py"], method)
    root = _write(tmp_path / method, files)
    r = audit_paths([root])[0]
    assert not [f for f in r.findings if f.rule in ("PG002", "PG003")], r.findings
    hits = [f for f in r.findings if f.rule == "PG401" and f.level == "error"]
    assert hits and all(f.file == "train_gpt.py#decoded1" and f.line == line for f in hits), hits
    assert all("from train_gpt.py line 5" in f.message for f in hits)
    meta = r.metrics["decoded_payloads"]["train_gpt.py#decoded1"]
    assert meta["from"] == "train_gpt.py" and meta["line"] == 5 and meta["layers"][-1] in ("lzma(raw)", "brotli")


def test_minified_wrapped_build_is_decoded(tmp_path):
    pytest.importorskip("python_minifier")
    from builder.wrap import minify, wrap

    ex, _line = _illegal_example("PG401")
    files = dict(ex.files)
    files["train_gpt.py"] = wrap(minify(files["train_gpt.py"]), "lzma")
    r = audit_paths([_write(tmp_path / "m", files)])[0]
    assert not [f for f in r.findings if f.rule in ("PG002", "PG003")], r.findings
    # decoded and analysed (whether the legality rules still see through renamed locals is their business)
    assert r.metrics["decoded_units"] == 1 and r.metrics["functions"] >= 4 and r.verdict != "error"


# -- code libcst rejects ----------------------------------------------------------------------------------------------


def test_valid_python_libcst_rejects_is_analysed_with_original_lines(tmp_path):
    ex, line = _illegal_example("PG401")
    glued = "import os\n_k=(os.sep if os.name else os.curdir)if os.name else 0\n"  # libcst rejects `)if`
    code = glued + ex.files["train_gpt.py"]
    files = dict(ex.files, **{"train_gpt.py": code})
    r = audit_paths([_write(tmp_path / "g", files)])[0]
    assert not [f for f in r.findings if f.rule == "PG002"], r.findings
    hits = [f for f in r.findings if f.rule == "PG401" and f.level == "error"]
    assert hits and all(f.file == "train_gpt.py" and f.line == line + 2 for f in hits), hits


def test_fixture_minified_script_parses():
    from auditor import pyparse

    text = (FIXTURES / "glued_keywords.py").read_text()
    p = pyparse.parse(text)
    assert p.how == "spaced" and p.text.count("\n") == text.count("\n")


def test_unparse_fallback_maps_lines(monkeypatch):
    from auditor import pyparse

    real = pyparse._libcst
    calls = []

    def picky(text):  # stand-in for a libcst that rejects the first two forms
        calls.append(text)
        return None if len(calls) < 3 else real(text)

    monkeypatch.setattr(pyparse, "_libcst", picky)
    src = "import os\n\n\ndef f(a,\n      b):\n    return (a\n            + b)\n\n\nx = f(1,\n      2)\n"
    p = pyparse.parse(src.replace("return (a", "return (a if a else b)if a else(a"))
    assert p.how == "unparsed"
    out = p.text.splitlines()
    assert p.line_map[out.index("def f(a, b):")] == 4
    assert p.line_map[next(i for i, x in enumerate(out) if x.startswith("x = f("))] == 10


def test_genuine_syntax_error_points_at_its_line(tmp_path):
    root = _write(tmp_path / "s", {"train_gpt.py": "import os\n\n\nprint(1 +)\n"})
    r = audit_paths([root / "train_gpt.py"])[0]
    f = [x for x in r.findings if x.rule == "PG002"]
    assert r.verdict == "error" and f and f[0].line == 4


# -- fuzz over real records -------------------------------------------------------------------------------------------


def _real_records() -> list:
    if not SHARED.is_dir():
        return []
    return sorted(p.parent for p in SHARED.glob("*/*/train_gpt.py"))[:40]


RECORDS = _real_records()


@st.composite
def _mutation(draw):
    return draw(st.lists(st.tuples(st.sampled_from(["delete", "insert", "dup", "truncate", "nest"]),
                                   st.integers(0, 10**7), st.integers(0, 300),
                                   st.sampled_from(["(", "[", "exec(", ")if ", "\x00", "'''", "\n    ", "é", "{"])),
                         max_size=3))


def _mutate(text: str, ops) -> str:
    for op, pos, n, ins in ops:
        if not text:
            break
        p = pos % len(text)
        if op == "delete":
            text = text[:p] + text[p + n:]
        elif op == "insert":
            text = text[:p] + ins * (1 + n % 7) + text[p:]
        elif op == "dup":
            text = text[:p] + text[p:p + n] + text[p:]
        elif op == "nest":
            text = text[:p] + "(" * (n * 5) + text[p:]
        else:
            text = text[:p]
    return text


@pytest.mark.skipif(not RECORDS, reason="../shared/submissions is not present")
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(idx=st.integers(0, max(0, len(RECORDS) - 1)), code_ops=_mutation(), log_ops=_mutation())
def test_fuzz_mutated_real_records(tmp_path_factory, idx, code_ops, log_ops):
    src = RECORDS[idx]
    root = tmp_path_factory.mktemp("fz") / src.name
    shutil.copytree(src, root)
    code = root / "train_gpt.py"
    code.write_text(_mutate(code.read_text(encoding="utf-8", errors="replace"), code_ops))
    logs = sorted(root.glob("*.log"))
    if logs:
        logs[0].write_text(_mutate(logs[0].read_text(encoding="utf-8", errors="replace"), log_ops))
    t0 = time.monotonic()
    items = [(str(root), str(code), str(root), True)]
    results, crashed = audit_items(items, Options(), limits=Limits(memory_bytes=2 << 30, cpu_seconds=30,
                                                                   wall_seconds=60))
    assert time.monotonic() - t0 < 60
    assert not crashed, crashed
    r = results[0]
    assert r.verdict in ("pass", "fail", "error")
    assert not any(f.rule == "PG000" for f in r.findings)
    stopped = [f for f in r.findings if f.rule == "PG002" and "stopped" in f.message]
    assert not stopped, stopped  # no mutation of a real record needs more than the limits


def test_dynamic_only_never_parses_hostile_code_in_the_parent(tmp_path, monkeypatch, capsys):
    """--dynamic-only takes the static facts from the isolated child; a child that was stopped gives none."""
    import auditor.dynamic as dyn
    from auditor import source
    from pgolf.cli import main

    _write(tmp_path / "t" / "good", _folder())
    _write(tmp_path / "t" / "deep", dict(_folder(), **{"train_gpt.py": _wrap("y = " + "[" * 1500 + "]" * 1500)}))
    seen = {}

    def fake(path, static_context, timeout, **_kw):
        seen[Path(path).name] = static_context
        return []

    def no_parent_load(*a, **k):
        raise AssertionError("load_submission ran in the parent")

    monkeypatch.setattr(dyn, "run_dynamic", fake)
    monkeypatch.setattr(source, "load_submission", no_parent_load)  # the child uses engine's own reference
    rc = main(["audit", "--dynamic-only", "--format", "json", "--no-progress", str(tmp_path / "t")])
    assert rc in (0, 1), capsys.readouterr().err
    assert set(seen) == {"good", "deep"}
    assert isinstance(seen["good"]["env"], dict) and "train_gpt.py" in seen["good"]["decoded_sources"]
    assert seen["deep"] is None or "train_gpt.py#decoded1" in seen["deep"]["decoded_sources"]
