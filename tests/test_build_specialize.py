"""`pgolf build --specialize`: constant folding on small sources, determinism and grammar of the specialized record
build, exact reproduction of `pgolf train` by a specialized+minified+wrapped tiny build, and the one-line refusal
of an environment override of a frozen switch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import libcst as cst
import pytest

from conftest import run_pgolf
from test_build_record import TINY_ARGS, _run_built

from builder.specialize import OFF_WHEN_ZERO, SWITCHES, frozen_values, specialize_sections


def _spec(code: str, frozen: dict) -> tuple[str, list]:
    mod = cst.parse_module(code)
    sections, _tail, names = specialize_sections([("m.py", list(mod.body))], [], frozen)
    return cst.Module(body=sections[0][1]).code, names


HP = "class Hyperparameters:\n    x: int = 0\n\n"


def test_folds_if_elif_else_ternary_and_boolean_ops():
    src = HP + (
        "def f(h, y):\n"
        "    if h.ttt_enabled:\n        a = 1\n    elif y:\n        a = 2\n    else:\n        a = 3\n"
        "    if h.compressor == 'zlib':\n        b = 1\n    elif h.compressor == 'brotli':\n        b = 2\n    else:\n        b = 3\n"
        "    c = 5 * (y if not h.ema_enabled else 7)\n"
        "    d = h.ema_enabled and y\n"
        "    e = h.ttt_enabled or y\n"
        "    return a, b, c, d, e\n"
    )
    out, names = _spec(src, {"ttt_enabled": 0, "compressor": "brotli", "ema_enabled": 1})
    ns = {}
    exec(out, ns)
    assert ns["f"](None, "Y") == (2, 2, 35, "Y", "Y")
    assert "zlib" not in out and "a = 1" not in out and "b = 3" not in out and "b = 1" not in out
    assert names == ["compressor", "ema_enabled", "ttt_enabled"]
    assert "__post_init__" in out  # the frozen-switch check is added to the Hyperparameters class


def test_keeps_unfrozen_fstrings_assigned_fields_and_drops_code_after_return():
    src = HP + (
        "def g(h):\n"
        "    if h.ttt_optimizer == 'sgd':\n        return 1\n"
        "    raise ValueError(f'bad {h.ttt_optimizer}')\n"
        "def k(h):\n"
        "    h.bit_pack = 1\n"
        "    return h.bit_pack, h.iterations\n"
    )
    out, names = _spec(src, {"ttt_optimizer": "sgd", "bit_pack": 0})
    assert "raise ValueError" not in out  # unreachable after the folded `return 1`
    assert "h.bit_pack" in out and names == ["ttt_optimizer"]  # an assigned field is never frozen
    ns = {}
    exec(out, ns)
    assert ns["g"](None) == 1


def test_frozen_values_cover_switches_and_only_off_numeric_switches():
    from trainer.config import BAKED_CONFIG  # noqa: F401  (the real module's values are the defaults here)

    fz = frozen_values({"ttt_enabled": 1, "eval_stride": 64, "compressor": "brotli"})
    assert fz["ttt_enabled"] == 1 and fz["compressor"] == "brotli" and fz["ema_enabled"] == 0
    assert "eval_stride" not in fz and fz["late_qat_threshold"] == 0.0  # on: free; off: frozen
    assert set(fz) <= set(SWITCHES) | set(OFF_WHEN_ZERO)
    for free in ("seed", "data_path", "tokenizer_path", "run_id", "out_dir", "iterations", "max_wallclock_seconds",
                 "matrix_lr", "device", "num_layers"):
        assert free not in fz


def test_specialized_record_build_is_deterministic_smaller_and_parses():
    from builder.ship import Form, shipped_source
    from trainer.config import Hyperparameters
    from trainer.presets import get_preset

    config = Hyperparameters.resolve(preset=get_preset("record"), env={}).to_dict()
    a = shipped_source(config, Form(specialize=True)).text
    assert a == shipped_source(config, Form(specialize=True)).text
    plain = shipped_source(config, Form()).text
    assert len(a) < len(plain)
    assert "def eval_ttt(" in a and "class WeightEMA" in a  # the record stack keeps TTT and EMA ...
    for gone in ("class WeightSWA", "def collect_hessians", "def generate_calibration"):  # ... SWA and GPTQ go
        assert gone in plain and gone not in a, gone
    for ver in ("3.10", "3.11", "3.12"):
        cst.parse_module(a, config=cst.PartialParserConfig(python_version=ver))


@pytest.fixture(scope="module")
def tiny_run(tiny_data, tmp_path_factory):
    d = tmp_path_factory.mktemp("spec_run") / "seed21"
    run_pgolf("train", *TINY_ARGS, "--data", tiny_data["data"], "--tokenizer", tiny_data["tokenizer"], "--out", d,
              "--seed", 21)
    return d


def _specialized_code(run_dir):
    from builder.runs import load_run_dir
    from builder.ship import parse_form, shipped_source

    run = load_run_dir(run_dir)
    shipped = shipped_source(run.config, parse_form("lzma"))  # specialized + minified + lzma
    return shipped.text, shipped.sizes, run


def test_specialized_wrapped_build_reproduces_pgolf_train(tiny_run, tiny_data, tmp_path):
    code, sizes, run = _specialized_code(tiny_run)
    assert run.code_form == "plain" and sizes["specialized"] < run.code_bytes  # the run reserved the plain file
    got, blob, _ = _run_built(code, tiny_data, tmp_path / "built", 21)
    want = json.loads((tiny_run / "metrics.json").read_text())
    assert [r[:2] for r in got["history"]["train"]] == [r[:2] for r in want["history"]["train"]]
    assert [r[:3] for r in got["history"]["val"]] == [r[:3] for r in want["history"]["val"]]
    for key in ("val_loss", "val_bpb", "pre_quant_val_loss", "post_quant_val_loss", "model_bytes", "steps"):
        assert got[key] == want[key], key
    assert blob == (tiny_run / "final_model.ptz").read_bytes()


def test_specialized_build_refuses_override_of_frozen_switch(tiny_run, tiny_data, tmp_path):
    code, _sizes, run = _specialized_code(tiny_run)
    assert run.config["ttt_enabled"] == 0
    (tmp_path / "train_gpt.py").write_text(code, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(DATA_PATH=str(tiny_data["data"]), TOKENIZER_PATH=str(tiny_data["tokenizer"]), OUT_DIR=str(tmp_path / "run"),
               TTT_ENABLED="1", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "train_gpt.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1, proc.stderr
    assert err[0].startswith("error: TTT_ENABLED=1: this train_gpt.py was specialized to TTT_ENABLED=0")
    assert not (tmp_path / "run" / "metrics.json").exists()


@pytest.mark.slow
def test_specialized_record_stack_reproduces_pgolf_train(tiny_data, tmp_path):
    """The record preset at tiny scale (EMA, int6 export, sliding eval, legal TTT), specialized, minified and
    LZMA-wrapped: identical losses, scores and artifact."""
    run_dir = tmp_path / "record_tiny"
    run_pgolf("train", "--preset", "record", "--scale", "tiny", "--iterations", "4", "--val-max-tokens", "8192",
              "--data", tiny_data["data"], "--tokenizer", tiny_data["tokenizer"], "--out", run_dir, "--seed", 5)
    code, sizes, run = _specialized_code(run_dir)
    assert run.config["ttt_enabled"] == 1 and sizes["specialized"] < run.code_bytes  # the run reserved the plain file
    got, blob, _ = _run_built(code, tiny_data, tmp_path / "built", 5)
    want = json.loads((run_dir / "metrics.json").read_text())
    assert [r[:2] for r in got["history"]["train"]] == [r[:2] for r in want["history"]["train"]]
    for key in ("pre_quant_val_loss", "post_quant_val_loss", "sliding_val_bpb", "ttt_val_loss", "ttt_val_bpb", "val_bpb", "model_bytes"):
        assert got[key] == want[key], key
    assert blob == (run_dir / "final_model.ptz").read_bytes()


def test_literal_self_attributes_and_conversions_fold_within_their_class():
    src = HP + (
        "class M:\n"
        "    def __init__(self, h):\n"
        "        self.banked = bool(h.param_banks)\n"
        "        self.n = 3\n"
        "    def f(self):\n"
        "        return 'bank' if self.banked else 'flat', self.n\n"
        "class N:\n"
        "    def __init__(self):\n"
        "        self.k = 1\n"
        "    def g(self):\n"
        "        self.k += 1\n"
        "        return self.k\n"
    )
    out, _names = _spec(src, {"param_banks": 0})
    assert "'bank'" not in out and "self.banked = False" in out  # read folded, assignment kept
    assert "return 'flat', 3" in out
    assert "return self.k" in out  # assigned twice: not a constant
    ns = {}
    exec(out, ns)
    assert ns["M"](None).f() == ("flat", 3) and ns["N"]().g() == 2


def test_parameters_every_call_passes_as_the_same_literal_fold_inside_the_callee():
    src = HP + (
        "class Attn:\n"
        "    def __init__(self, dim, gated):\n"
        "        self.gated = gated\n"
        "        self.dim = dim\n"
        "    def f(self, x):\n"
        "        return x * 2 if self.gated else x + self.dim\n"
        "def mk(h, d, flag=False):\n"
        "    return Attn(d, bool(h.gated_attention)), (1 if flag else 0)\n"
        "def use(h):\n"
        "    return mk(h, 3), mk(h, 4)\n"
        "def passed_around(v):\n"
        "    return v\n"
        "cb = passed_around\n"
        "def both():\n"
        "    return passed_around(True), passed_around(True)\n"
    )
    out, _names = _spec(src, {"gated_attention": 0})
    assert "x * 2" not in out and "self.gated = False" in out
    assert "return Attn(d, False), 0\n" in out  # flag: the same literal default at every call
    assert "return v" in out  # a function that is also used as a value keeps its parameter
    ns = {}
    exec(out, ns)
    (a, z), (b, _z) = ns["use"](None)
    assert a.f(5) == 8 and b.f(5) == 9 and z == 0 and ns["both"]() == (True, True)
