"""Python 3.12 f-strings (PEP 701) re-quoted for an older interpreter: the dynamic-audit child runs such payloads
instead of stopping with PG902, and what cannot be re-quoted still stops with the original SyntaxError."""

from __future__ import annotations

import base64
import lzma
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "auditor" / "dynamic" / "shims"))
import pgolf_pep701  # noqa: E402
from pgolf_pep701 import downgrade  # noqa: E402

# (3.12 source, equivalent hand-written 3.11 source); each defines `out`
CASES = {
    "dict_subscript_same_quote": (
        'd = {"k": 1, "j": "v"}\nout = f"{d["k"]}-{d["j"]!r}"\n',
        "d = {'k': 1, 'j': 'v'}\nout = f\"{d['k']}-{d['j']!r}\"\n",
    ),
    "nested_fstring_same_quotes": (
        'x = 3\nout = f"a{f"<{x}>"}b{f"{"q"}"}"\n',
        "x = 3\nout = f\"a{f'<{x}>'}b{f'''{'q'}'''}\"\n",
    ),
    "format_spec_with_string": (
        'v = 2.5\nout = f"{v:>{"8"}.{"3"}f}|{"ab":^6}|"\n',
        "v = 2.5\nout = f\"{v:>{'8'}.{'3'}f}|{'ab':^6}|\"\n",
    ),
    "join_and_call_single_quotes": (
        "names = ['a', 'b']\nout = f'{', '.join(names)} {'x'.upper()=}'\n",
        "names = ['a', 'b']\nout = f'{\", \".join(names)} {\"x\".upper()=}'\n",
    ),
    "multiline_call_keeps_lines": (
        'm = {"loss": 0.5}\nout = (f"loss {m["loss"]:.3f}"\n       f" n={len(m)}")\nline = 4\n',
        "m = {'loss': 0.5}\nout = (f\"loss {m['loss']:.3f}\"\n       f\" n={len(m)}\")\nline = 4\n",
    ),
}


def _run(src: str) -> str:
    ns: dict = {}
    exec(compile(src, "<t>", "exec"), ns)
    return ns["out"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_downgrade_compiles_and_keeps_meaning(name):
    new_src, old_src = CASES[name]
    out = downgrade(new_src)
    assert out is not None
    assert out.count("\n") == new_src.count("\n")  # only quote characters change, never lines
    compile(out, "<t>", "exec")  # parses under the running Python
    assert _run(out) == _run(old_src)
    if sys.version_info >= (3, 12):
        assert _run(new_src) == _run(old_src)
    else:
        with pytest.raises(SyntaxError):
            compile(new_src, "<t>", "exec")


@pytest.mark.parametrize("src", [
    'print(f"{"\\n".join(["a", "b"])}")\n',  # a backslash inside a replacement field
    'print(f"{1  # a comment\n}")\n',  # a comment inside one
    'x = 1\nprint(f"{f"{f"{f"{x}"}"}"}")\n',  # four nested levels: more than the quote styles allow
    "x = 'it''s'\n",  # nothing to re-quote
    "def broken(:\n",  # not Python at all
])
def test_downgrade_refuses_what_cannot_be_requoted(src):
    assert downgrade(src) is None


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="PEP 701 f-strings parse on this Python")
def test_wrapped_builtins_retry_only_pep701_errors(monkeypatch):
    import builtins

    for name in ("compile", "exec", "eval"):
        monkeypatch.setattr(builtins, name, getattr(builtins, name))
    pgolf_pep701.install()
    ns: dict = {}
    builtins.exec('d = {"k": 7}\nout = f"{d["k"]}"\n', ns)
    assert ns["out"] == "7"
    assert builtins.eval('f"{"a" + "b"}"') == "ab"
    code = builtins.compile(b'out = f"{"x"}"\n', "<payload>", "exec")
    builtins.exec(code, ns)
    assert ns["out"] == "x"
    with pytest.raises(SyntaxError, match="backslash"):  # the original error stands when re-quoting cannot help
        builtins.exec('out = f"{\'\\n\'.join([])}"\n', {})
    with pytest.raises(SyntaxError):
        builtins.compile("def broken(:\n", "<x>", "exec")


def test_wrapped_builtins_keep_the_callers_future_flags(monkeypatch):
    """The wrappers compile on the caller's behalf: its `from __future__` flags apply, the wrapper module's never."""
    import builtins

    src = "def f(x: int): pass\nout = f.__annotations__['x']\n"
    driver = "exec(src, ns)\nres = eval('f.__annotations__', ns)['x']\nc = compile(src, '<c>', 'exec')\n"
    want = {}
    for future in ("", "from __future__ import annotations\n"):
        g = {"src": src, "ns": {}}
        builtins.exec(builtins.compile(future + driver, "<d>", "exec", dont_inherit=True), g)
        want[future] = (g["ns"]["out"], g["res"], g["c"].co_flags)
    monkeypatch.setattr(builtins, "compile", pgolf_pep701._compile)
    monkeypatch.setattr(builtins, "exec", pgolf_pep701._run("exec", "exec"))
    monkeypatch.setattr(builtins, "eval", pgolf_pep701._run("eval", "eval"))
    for future, (out, res, flags) in want.items():
        g = {"src": src, "ns": {}}
        pgolf_pep701._ORIG["exec"](pgolf_pep701._ORIG["compile"](future + driver, "<d>", "exec", 0, True), g)
        assert (g["ns"]["out"], g["res"], g["c"].co_flags) == (out, res, flags)
    assert want[""][0] is int and want["from __future__ import annotations\n"][0] == "int"


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="PEP 701 f-strings parse on this Python")
@pytest.mark.parametrize("wrapped", [True, False])
def test_312_fstring_runs_in_dynamic_audit(tmp_path, wrapped):
    """The shape of the real records: a wrapper that exec()s an lzma+base85 payload written for Python 3.12 (and the
    same code as the script itself, which the runner's runpy compiles)."""
    from auditor.dynamic import run_dynamic

    # the payload stops itself with a message built by the 3.12 f-string: the audit reports it, so it ran
    payload = 'cfg = {"name": "tiny", "n": 3}\nraise RuntimeError(f"model {cfg["name"]}:{f"{cfg["n"]:>{"4"}}"}")\n'
    blob = base64.b85encode(lzma.compress(payload.encode())).decode()
    sub = tmp_path / "sub"
    sub.mkdir()
    wrapper = f"import lzma as L,base64 as B\nexec(L.decompress(B.b85decode({blob!r})))\n"
    (sub / "train_gpt.py").write_text(wrapper if wrapped else payload)
    res = run_dynamic(sub, timeout=120, cache_dir=tmp_path / "cache")
    rules = {f.rule for f in res.findings}
    assert "PG902" not in rules, [f.message for f in res.findings]
    assert any("model tiny:   3" in f.message for f in res.findings if f.rule == "PG900"), [
        f.message for f in res.findings]
