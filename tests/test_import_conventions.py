"""The conventions inlining relies on, enforced over the real trainer package (docs/architecture.md):
first-party imports only as top-level `from trainer.x import name`, no `import *`, no relative imports, no aliasing,
unique top-level names across the single-file set, no CLI/data modules in it, no work at import time."""

from __future__ import annotations

import ast

import pytest

from builder.inline import (
    ENTRY,
    check_name_collisions,
    collect_modules,
    inline_package,
    top_level_bindings,
    trainer_root,
)

NOT_SINGLE_FILE = {"trainer.data_cli", "trainer.data_build", "trainer.data_fetch", "trainer.data_stats",
                   "trainer.presets", "trainer.preflight"}
ROOT = trainer_root()
# package -> first-party packages it may import (imports point down; only `pgolf`, the CLI, sees all three parts)
ALLOWED = {
    "trainer": {"trainer"},
    "auditor": {"auditor", "trainer"},  # trainer.errors only (checked below)
    "builder": {"builder", "trainer", "auditor"},  # auditor.logs parses --from-logs runs
    "pgolf": {"pgolf", "trainer", "builder", "auditor"},
}


@pytest.fixture(scope="module")
def modules():
    # collect_modules raises InlineError on relative, star, aliased, `import trainer.x` or nested first-party imports
    return collect_modules(trainer_root(), ENTRY)


def test_single_file_set_reaches_the_model_and_pipeline(modules):
    names = [m.name for m in modules]
    assert names[-1] == ENTRY
    for needed in ("trainer.config", "trainer.model", "trainer.errors"):
        assert needed in names
    assert not NOT_SINGLE_FILE & set(names), f"single-file modules import CLI/data modules: {NOT_SINGLE_FILE & set(names)}"


def test_top_level_names_are_unique(modules):
    check_name_collisions(modules)
    seen = {}
    for m in modules:
        for name in top_level_bindings(m.body):
            assert seen.setdefault(name, m.rel) == m.rel or name in ("zstandard", "brotli", "flash_attn_interface"), (
                f"{name} defined in {seen[name]} and {m.rel}")


def test_no_work_at_import_time(modules):
    """Top level: imports, constants (assignments), functions, classes, guarded imports; no bare calls."""
    for m in modules:
        tree = ast.parse(m.path.read_text(encoding="utf-8"))
        for i, node in enumerate(tree.body):
            if isinstance(node, ast.Expr):
                is_doc = i == 0 and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
                assert is_doc, f"{m.rel}:{node.lineno}: top-level expression statement (work at import time)"
            assert not isinstance(node, (ast.For, ast.While, ast.With)), f"{m.rel}:{node.lineno}: top-level {type(node).__name__}"
            if isinstance(node, ast.Try):
                for sub in ast.walk(node):
                    assert not isinstance(sub, ast.Call), f"{m.rel}:{sub.lineno}: call inside a top-level try (only guarded imports belong there)"


def test_every_module_in_the_set_uses_the_allowed_import_forms(modules):
    for m in modules:
        for node in ast.walk(ast.parse(m.path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                assert node.level == 0, f"{m.rel}:{node.lineno}: relative import"
                assert all(a.name != "*" for a in node.names), f"{m.rel}:{node.lineno}: import *"
                if (node.module or "").split(".")[0] == "trainer":
                    assert all(a.asname is None for a in node.names), f"{m.rel}:{node.lineno}: aliased first-party import"
            if isinstance(node, ast.Import):
                assert all(a.name.split(".")[0] != "trainer" for a in node.names), f"{m.rel}:{node.lineno}: import trainer.x"


def test_inlined_trainer_is_self_contained():
    res = inline_package(trainer_root(), ENTRY, baked_config={"num_layers": 3})
    src = res.source
    tree = ast.parse(src)  # inline_package also checked 3.10-3.12 grammars
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert (node.module or "").split(".")[0] != "trainer"
        if isinstance(node, ast.Import):
            assert all(a.name.split(".")[0] != "trainer" for a in node.names)
    assert src.count("from __future__ import") <= 1
    assert "'num_layers': 3," in src
    assert src.count('if __name__ == "__main__":') == 1
    for m in ("trainer/config.py", "trainer/model.py", "trainer/train.py"):
        assert f"# ---- {m} ----" in src


def _first_party_imports(path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module
        elif isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, a.name
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module":
            arg = node.args[0] if node.args else None
            yield node.lineno, arg.value if isinstance(arg, ast.Constant) and isinstance(arg.value, str) else "<dynamic>"


def test_imports_point_down():
    """trainer imports none of the others, the auditor only trainer.errors, and no package imports our own modules
    through importlib (plain imports only between our packages)."""
    for pkg, allowed in ALLOWED.items():
        for path in sorted((ROOT / pkg).rglob("*.py")):
            if "shims" in path.parts:  # files copied into the sandbox, not imported by pgolf
                continue
            for line, mod in _first_party_imports(path):
                top = mod.split(".")[0]
                where = f"{path.relative_to(ROOT)}:{line}"
                # the auditor discovers its own rule modules by name; elsewhere a computed import hides a dependency
                assert mod != "<dynamic>" or pkg == "auditor", f"{where}: importlib.import_module of a computed name"
                if top in ALLOWED:
                    assert top in allowed, f"{where}: {pkg} imports {mod} (imports must point down)"
                    if pkg == "auditor" and top == "trainer":
                        assert mod == "trainer.errors", f"{where}: the auditor imports {mod} (only trainer.errors)"
