"""The libcst inliner on small fixture packages: ordering, import hoisting, main guard, collisions, dead code."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from builder.inline import InlineError, collect_modules, inline_package

FIXTURE = {
    "fixpkg/__init__.py": '"""fixture package."""\n',
    "fixpkg/errors.py": '''
        """errors."""
        class FixError(Exception):
            pass
    ''',
    "fixpkg/config.py": '''
        """config with a bakeable literal."""
        from __future__ import annotations

        import os
        from dataclasses import dataclass

        from fixpkg.errors import FixError

        BAKED_CONFIG: dict = {}


        @dataclass
        class Conf:
            steps: int = 3
            scale: float = 1.0

            @classmethod
            def resolve(cls):
                vals = {"steps": 3, "scale": 1.0}
                vals.update(BAKED_CONFIG)
                if os.environ.get("STEPS"):
                    vals["steps"] = int(os.environ["STEPS"])
                if vals["steps"] < 0:
                    raise FixError("negative steps")
                return cls(**vals)
    ''',
    "fixpkg/mathx.py": '''
        from __future__ import annotations

        import math
        import os
        from collections import OrderedDict

        try:
            import zlib
        except ImportError:
            zlib = None


        def helper_square(x):
            return x * x


        def never_called_anywhere(x):
            return math.sqrt(x) + helper_only_used_by_dead(x)


        def helper_only_used_by_dead(x):
            return x


        def checksum(data: bytes) -> int:
            return zlib.crc32(data)


        def table():
            return OrderedDict(a=1)


        if __name__ == "__main__":
            print("mathx main must be dropped")
    ''',
    "fixpkg/train.py": '''
        """Entry docstring."""
        from __future__ import annotations

        import math
        import sys

        try:
            import zlib
        except ImportError:
            zlib = None

        from fixpkg.config import Conf
        from fixpkg.mathx import checksum, helper_square, table


        def main():
            c = Conf.resolve()
            total = sum(helper_square(i) * c.scale for i in range(c.steps))
            print(f"total={total} crc={checksum(str(total).encode())} pi={math.pi:.3f} t={dict(table())}")
            print(f"module={__name__}", file=sys.stderr)


        if __name__ == "__main__":
            main()
    ''',
}


def write_pkg(root, files):
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return root


def run_py(args, cwd, env_extra=None):
    import os

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def test_inlined_fixture_runs_like_the_package(tmp_path):
    root = write_pkg(tmp_path / "src", FIXTURE)
    res = inline_package(root, "fixpkg.train")
    src = res.source
    assert res.modules == ["fixpkg/errors.py", "fixpkg/config.py", "fixpkg/mathx.py", "fixpkg/train.py"]
    # one future line at the top after the entry docstring, imports hoisted once each
    assert src.startswith('"""Entry docstring."""\n\nfrom __future__ import annotations\n')
    assert src.count("from __future__") == 1
    assert src.count("import math\n") == 1 and src.count("import os\n") == 1
    assert "from fixpkg" not in src and "import fixpkg" not in src
    assert src.count("import zlib") == 1  # identical guarded import kept once
    assert "# ---- fixpkg/config.py ----" in src and "# ---- fixpkg/train.py ----" in src
    assert "mathx main must be dropped" not in src
    assert src.count('if __name__ == "__main__":') == 1
    assert "never_called_anywhere" not in src and "helper_only_used_by_dead" not in src
    assert sorted(res.removed) == ["fixpkg/mathx.py:helper_only_used_by_dead", "fixpkg/mathx.py:never_called_anywhere"]
    out = tmp_path / "out"
    out.mkdir()
    (out / "single.py").write_text(src)
    got = run_py(["single.py"], out, {"STEPS": "5"})
    want = run_py(["-m", "fixpkg.train"], root, {"STEPS": "5"})
    assert want.returncode == 0, want.stderr
    assert got.returncode == 0, got.stderr
    assert got.stdout == want.stdout and "total=30.0" in got.stdout


def test_baked_config_becomes_the_default(tmp_path):
    root = write_pkg(tmp_path / "src", FIXTURE)
    src = inline_package(root, "fixpkg.train", baked_config={"steps": 4, "scale": 0.5}).source
    assert "BAKED_CONFIG: dict = {\n    'steps': 4,\n    'scale': 0.5,\n}" in src
    (tmp_path / "single.py").write_text(src)
    assert "total=7.0" in run_py(["single.py"], tmp_path).stdout
    # environment still overrides the baked value
    assert "total=2.5" in run_py(["single.py"], tmp_path, {"STEPS": "3"}).stdout


def test_deterministic(tmp_path):
    root = write_pkg(tmp_path / "src", FIXTURE)
    a = inline_package(root, "fixpkg.train", baked_config={"steps": 2}).source
    b = inline_package(root, "fixpkg.train", baked_config={"steps": 2}).source
    assert a == b


@pytest.mark.parametrize(
    "module, text, message",
    [
        ("fixpkg/mathx.py", "from .errors import FixError\n", "relative import"),
        ("fixpkg/mathx.py", "from fixpkg.errors import *\n", "star imports"),
        ("fixpkg/mathx.py", "import fixpkg.errors\n", "use `from fixpkg.errors import name`"),
        ("fixpkg/mathx.py", "from fixpkg.errors import FixError as E\n", "cannot be aliased"),
        ("fixpkg/mathx.py", "def f():\n    from fixpkg.errors import FixError\n    return FixError\n", "inside a function"),
        ("fixpkg/mathx.py", "from fixpkg.errors import Missing\n", "defines no top-level 'Missing'"),
        ("fixpkg/mathx.py", "def main():\n    return 1\n", "top-level name 'main' is defined in both"),
        ("fixpkg/errors.py", "from fixpkg.train import main\n", "import cycle in the single-file set: fixpkg.train -> fixpkg.config -> fixpkg.errors -> fixpkg.train"),
        ("fixpkg/mathx.py", "from json import dumps as table\n", "import binds 'table'"),
    ],
)
def test_refuses_what_cannot_be_inlined(tmp_path, module, text, message):
    files = dict(FIXTURE)
    files[module] = textwrap.dedent(files[module]).lstrip("\n") + "\n" + text
    root = write_pkg(tmp_path / "src", files)
    with pytest.raises(InlineError) as exc:
        inline_package(root, "fixpkg.train")
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)


def test_missing_bake_target_is_an_error(tmp_path):
    files = dict(FIXTURE)
    files["fixpkg/config.py"] = files["fixpkg/config.py"].replace("BAKED_CONFIG: dict = {}", "OTHER: dict = {}").replace("BAKED_CONFIG", "OTHER")
    root = write_pkg(tmp_path / "src", files)
    with pytest.raises(InlineError, match="no top-level BAKED_CONFIG"):
        inline_package(root, "fixpkg.train", baked_config={"steps": 1})


def test_topological_order_follows_first_use(tmp_path):
    root = write_pkg(tmp_path / "src", FIXTURE)
    names = [m.name for m in collect_modules(root, "fixpkg.train")]
    assert names.index("fixpkg.errors") < names.index("fixpkg.config") < names.index("fixpkg.train")
    assert names[-1] == "fixpkg.train"


def test_syntax_newer_than_310_is_refused(tmp_path):
    files = dict(FIXTURE)
    files["fixpkg/mathx.py"] = textwrap.dedent(files["fixpkg/mathx.py"]) + "\n\ndef gen(xs):\n    try:\n        pass\n    except* ValueError:\n        pass\n    return gen\n"
    root = write_pkg(tmp_path / "src", files)
    with pytest.raises(InlineError, match="does not parse on Python 3.10"):
        inline_package(root, "fixpkg.train", drop_unreferenced=False)


HELP_PKG = {
    "hp/__init__.py": "",
    "hp/conf.py": '''
        from dataclasses import dataclass, field, fields


        def _f(default, env, help, group):
            return field(default=default, metadata={"env": env, "help": help, "group": group})


        @dataclass
        class Conf:
            steps: int = _f(3, "STEPS", "number of optimizer steps taken by the run", "train")


        def describe():
            return [f.metadata["help"] for f in fields(Conf)]
    ''',
    "hp/main.py": '''
        from hp.conf import Conf, describe


        def main():
            print(Conf().steps)

        if __name__ == "__main__":
            main()
    ''',
}


def test_unread_help_strings_are_blanked_only_when_nothing_reads_them(tmp_path):
    root = write_pkg(tmp_path / "a", HELP_PKG)
    src = inline_package(root, "hp.main").source
    assert "number of optimizer steps" not in src and '_f(3, "STEPS", "", "train")' in src
    assert "describe" not in src  # unreferenced reader removed first, which makes the help unread
    files = dict(HELP_PKG)
    files["hp/main.py"] = files["hp/main.py"].replace("print(Conf().steps)", "print(Conf().steps, describe())")
    root = write_pkg(tmp_path / "b", files)
    src = inline_package(root, "hp.main").source
    assert "number of optimizer steps taken by the run" in src  # describe() is referenced: help is read, kept
    (tmp_path / "b.py").write_text(src)
    assert run_py(["b.py"], tmp_path).stdout.strip() == "3 ['number of optimizer steps taken by the run']"
