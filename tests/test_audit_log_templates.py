"""Settings recovered from log lines through the script's own f-strings (auditor.logtemplates)."""

import time
from pathlib import Path

import libcst as cst
import pytest

from auditor import logtemplates
from auditor.config import build_config
from auditor.source import discover, load_submission

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "submissions"

CODE = '''import os
class Hyperparameters:
    ttt_enabled = bool(int(os.environ.get("TTT_ENABLED", "0")))
    ttt_lr = float(os.environ.get("TTT_LR", 0.0005))
    iterations = int(os.environ.get("ITERATIONS", 20000))

def doc_ttt(args, log_fn, lr=0.01, chunk_size=256, epochs=3):
    log_fn(f"doc_ttt: lr={lr} chunk={chunk_size} epochs={epochs} docs={len([1, 2])}")

def main():
    args = Hyperparameters()
    chunk = int(os.environ.get("TTT_CHUNK_SIZE", "1024"))
    scale = float(os.environ.get("WD_SCALE", "1.0")) * 2
    for step in range(3):
        print(f"planned iterations:{args.iterations}")
    print(f"improvements: ema ttt={args.ttt_enabled} scale={scale}")
    print(f"loop var: {step}")
    doc_ttt(args, print, lr=args.ttt_lr, chunk_size=chunk)
'''

LOG = """improvements: ema ttt=True scale=3.0
planned iterations:20000
step:1/20000 train_loss:6.9 train_time:1ms step_avg:1.00ms
planned iterations:500
doc_ttt: lr=0.01 chunk=256 epochs=3 docs=2
loop var: 7
final_int8_zlib_roundtrip val_loss:1.9 val_bpb:1.12 eval_time:1ms
"""


def _sub(tmp_path, code=CODE, log=LOG):
    (tmp_path / "train_gpt.py").write_text(code)
    (tmp_path / "train_seed1.log").write_text(log)
    return load_submission(*discover([tmp_path])[0])


def test_values_follow_placeholders_to_env_reads(tmp_path):
    cfg = build_config(_sub(tmp_path))
    env = cfg.effective()
    # `ttt={args.ttt_enabled}` printed True for an int(...) parse: exported as the script accepts it
    assert env["TTT_ENABLED"] == "1"
    # parameters resolved through the one call site: lr=args.ttt_lr, chunk_size=chunk (a local env read)
    assert env["TTT_LR"] == "0.01" and env["TTT_CHUNK_SIZE"] == "256"
    assert cfg.template_lines["TTT_CHUNK_SIZE"] == ("train_seed1.log", 5)
    # not settings: `scale` is 2x an env value, `epochs` is left at its default by the caller, `step` a loop var
    assert "WD_SCALE" not in env and "EPOCHS" not in env
    # the last matching line wins (the log of a run shortened to 500 iterations)
    assert env["ITERATIONS"] == "500"


def test_without_logs_nothing_is_recovered(tmp_path):
    (tmp_path / "train_gpt.py").write_text(CODE)
    cfg = build_config(load_submission(*discover([tmp_path])[0]))
    assert cfg.effective() == {} and cfg.template_lines == {}


def test_a_parameter_reassigned_in_the_function_is_not_bound(tmp_path):
    code = CODE.replace('    log_fn(f"doc_ttt:', '    chunk_size = min(chunk_size, 64)\n    log_fn(f"doc_ttt:')
    env = build_config(_sub(tmp_path, code)).effective()
    assert "TTT_CHUNK_SIZE" not in env and env["TTT_LR"] == "0.01"


def test_ambiguous_names_are_not_bound(tmp_path):
    code = CODE.replace("    chunk = int(", "    chunk = 512\n    chunk = int(")
    env = build_config(_sub(tmp_path, code)).effective()
    assert "TTT_CHUNK_SIZE" not in env  # `chunk` is also assigned a literal: which value was printed is unknown


def test_adjacent_placeholders_and_short_prefixes_are_not_templates():
    mod = cst.parse_module('print(f"{a}{b} x")\nprint(f"ab{a}")\nprint(f"abc{a}{b}")\nprint(f"abc{a}-{b}")\n')

    class U:
        module = mod

        def nodes(self, *types):
            from auditor.cstwalk import walk
            return [(n, False) for n in walk(mod) if isinstance(n, types)]

    idx = logtemplates.build_index([U()])
    temps = [t for ts in idx.by_prefix.values() for t in ts]
    assert [t.parts for t in temps] == [["abc", "-", ""]]
    assert idx.match("abc1-2") and idx.match("abc1-2")[0][1] == ["1", "2"]
    assert idx.match("abc1") == []


def test_matching_is_linear_on_hostile_lines():
    seps = "".join(f"k{i}={{v{i}}} " for i in range(40))
    mod = cst.parse_module(f'print(f"start {seps}end")\n')

    class U:
        module = mod

        def nodes(self, *types):
            from auditor.cstwalk import walk
            return [(n, False) for n in walk(mod) if isinstance(n, types)]

    idx = logtemplates.build_index([U()])
    line = "start " + "k1=" * 1300  # a 4,000-char line that almost matches, the worst case for backtracking
    t0 = time.process_time()
    for _ in range(200):
        assert idx.match(line) == []
    assert time.process_time() - t0 < 1.0


@pytest.mark.skipif(not (SHARED / "illegal" / "pr713").is_dir(), reason="needs ../shared/submissions")
def test_real_record_switch_comes_from_its_log():
    """A LoRA-TTT pull request: TTT_ENABLED defaults to 0, no README command sets it; its logs print
    `improvements: ... ttt=True` and `lora_ttt_batched: ... chunk=256` from the script's own f-strings."""
    sub = load_submission(*discover([SHARED / "illegal" / "pr713"])[0])
    cfg = build_config(sub)
    env = cfg.effective()
    assert env["TTT_ENABLED"] == "1" and env["TTT_CHUNK_SIZE"] == "256" and env["TTT_LR"] == "0.01"
    assert cfg.template_lines["TTT_ENABLED"] == ("train_seed42.log", 15)
    assert cfg.adaptation_logged()


def test_work_is_bounded_per_submission():
    """Thousands of templates sharing a prefix against thousands of lines stop at the comparison budget."""
    code = "".join(f'print(f"same {i} {{x}} end")\n' for i in range(3000))
    mod = cst.parse_module(code)

    class U:
        module = mod

        def nodes(self, *types):
            from auditor.cstwalk import walk
            return [(n, False) for n in walk(mod) if isinstance(n, types)]

    idx = logtemplates.build_index([U()])
    t0 = time.process_time()
    for _ in range(4000):
        idx.match("same 1 " + "y" * 3000 + " end")
    assert idx.checks_left == 0 and time.process_time() - t0 < 2.0

