"""Minified and self-extracting wrappers: they run, keep __file__/__name__, register the source for inspect and
tracebacks, round-trip, and are deterministic."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from builder.inline import InlineError
from builder.wrap import minify, unwrap, wrap

SOURCE = '''"""doc."""
from __future__ import annotations

import inspect
import os
import traceback
from dataclasses import dataclass

BAKED_CONFIG: dict = {"steps": 4}


@dataclass
class Conf:
    steps: int = 2
    name: str = "x"


def kernel(value):
    """The body must be recoverable with inspect (torch.compile / Triton read sources this way)."""
    return value * 3


def main():
    print("size", os.path.getsize(__file__))
    print("conf", Conf(**BAKED_CONFIG))
    print("src", inspect.getsource(kernel).splitlines()[0])
    if os.environ.get("BOOM"):
        try:
            raise RuntimeError("boom from inside")
        except RuntimeError:
            traceback.print_exc()  # the traceback module (torchrun's error reports) reads sources via linecache
            raise


if __name__ == "__main__":
    main()
'''


def _run(tmp_path, text, env_extra=None):
    p = tmp_path / "train_gpt.py"
    p.write_text(text)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, str(p)], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=60)


@pytest.mark.parametrize("method", ["none", "lzma", "brotli"])
@pytest.mark.parametrize("do_minify", [False, True])
def test_wrapped_source_runs_like_the_original(tmp_path, method, do_minify):
    src = minify(SOURCE) if do_minify else SOURCE
    text = wrap(src, method)
    proc = _run(tmp_path, text)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == f"size {len(text.encode())}"  # code size is the shipped file's size
    assert lines[1] == "conf Conf(steps=4, name='x')"
    assert lines[2].startswith("src def kernel(value):")
    if method != "none":
        bad = _run(tmp_path, text, {"BOOM": "1"})
        assert bad.returncode == 1 and "boom from inside" in bad.stderr
        # the traceback module shows the decoded source line
        assert 'raise RuntimeError("boom from inside")' in bad.stderr or "raise RuntimeError('boom from inside')" in bad.stderr
        assert unwrap(text) == src
        assert len(text.splitlines()) == 5


def test_minify_keeps_globals_and_shrinks():
    out = minify(SOURCE)
    assert len(out) < len(SOURCE)
    for name in ("BAKED_CONFIG", "Conf", "kernel", "main", "steps"):
        assert name in out
    assert "The body must be recoverable" not in out  # docstrings dropped


def test_deterministic():
    assert wrap(SOURCE, "lzma") == wrap(SOURCE, "lzma")
    assert wrap(SOURCE, "brotli") == wrap(SOURCE, "brotli")
    assert minify(SOURCE) == minify(SOURCE)


def test_unknown_wrap_refused():
    with pytest.raises(InlineError, match="unknown wrap method 'zip'"):
        wrap(SOURCE, "zip")
