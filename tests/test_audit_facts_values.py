"""Facts the static rules read: log values mapped back to what the script's own env parsing accepts (the form
`--dynamic` exports), README smoke-test commands ignored, and linear-time parsing of hostile README/log lines."""

import time

import libcst as cst
import pytest

from auditor.config import _accepted, _parse_kind, _reads_env, build_config, effective_config
from auditor.logs import parse_log
from auditor.source import discover, load_submission

CODE = """import os
class Hyperparameters:
    tie_embeddings = bool(int(os.environ.get("TIE_EMBEDDINGS", "1")))
    ttt_enabled = os.environ.get("TTT_ENABLED", "0") == "1"
    ngram_on = os.environ.get("NGRAM_ON", "0").lower() in ("1", "true")
    use_ema = bool(os.environ.get("USE_EMA", ""))
    iterations = int(os.environ.get("ITERATIONS", 20000))
    ttt_lr = float(os.environ.get("TTT_LR", 0.002))
    run_id = os.environ.get("RUN_ID", "x")
    skip = int(os.environ["SKIP_GPTQ"])
args = Hyperparameters()
if os.environ.get("SLOT_ON", "0") != "0":
    print("slot")
"""
LOG = """Hyperparameters:
  tie_embeddings: True
  ttt_enabled: True
  ngram_on: False
  use_ema: False
  iterations: 20000.0
  ttt_lr: 0.005
  run_id: abc
  skip: False
  slot_on: False
step:1/10 train_loss:6.0 train_time:10ms step_avg:10.00ms
final_int8_zlib_roundtrip_exact val_loss:2.0 val_bpb:1.2
"""


def _sub(tmp_path, files):
    for k, v in files.items():
        (tmp_path / k).write_text(v)
    return load_submission(*discover([tmp_path])[0])


def test_printed_python_values_become_what_the_script_parses(tmp_path):
    env = effective_config(_sub(tmp_path, {"train_gpt.py": CODE, "train_seed1.log": LOG}))
    assert env["TIE_EMBEDDINGS"] == "1"  # int("True") would crash the dynamic run
    assert env["TTT_ENABLED"] == "1"  # == "1"
    assert env["NGRAM_ON"] in ("0", "false")  # .lower() in ("1", "true"): reads as off
    assert env["USE_EMA"] == ""  # bool(str): only the empty string is false
    assert env["ITERATIONS"] == "20000" and env["TTT_LR"] == "0.005" and env["RUN_ID"] == "abc"
    assert env["SKIP_GPTQ"] == "0"
    assert env["SLOT_ON"] == "0"  # "False" != "0" would switch the path on
    # and the script's own parsing reads every exported value back as the log printed it
    assert bool(int(env["TIE_EMBEDDINGS"])) is True and (env["TTT_ENABLED"] == "1") is True
    assert (env["NGRAM_ON"].lower() in ("1", "true")) is False and bool(env["USE_EMA"]) is False


def test_static_guard_follows_the_mapped_value(tmp_path):
    sub = _sub(tmp_path, {"train_gpt.py": CODE, "train_seed1.log": LOG})
    cfg = build_config(sub)
    guard = cst.parse_expression('os.environ.get("SLOT_ON", "0") != "0"')
    assert cfg.eval(guard) is False
    assert cfg.eval(cst.parse_expression('bool(os.environ.get("USE_EMA", ""))')) is False


@pytest.mark.parametrize(
    "src,printed,want",
    [
        ('bool(int(os.environ.get("XX", "0")))', "True", "1"),
        ('int(os.environ.get("XX", "0"))', "False", "0"),
        ('int(os.environ.get("XX", "0"))', "3.0", "3"),
        ('float(os.environ.get("XX", "0"))', "True", "1"),
        ('os.environ.get("XX", "0") == "1"', "True", "1"),
        ('os.environ.get("XX", "0").lower() in ("true", "yes")', "False", "0"),
        ('os.environ.get("XX", "1") != "0"', "False", "0"),
        ('os.environ.get("XX", "a")', "some/path", "some/path"),
    ],
)
def test_accepted_per_parse_shape(src, printed, want):
    kind = _parse_kind(cst.parse_expression(src), lambda n: _reads_env(n, "XX", set()))
    assert _accepted(kind, printed) == want


def test_env_helper_parse_kind(tmp_path):
    code = ('import os\ndef env_int(k, d):\n    return int(os.environ.get(k, d))\n'
            'class H:\n    tie = env_int("TIE_EMBEDDINGS", 1)\n')
    log = "Hyperparameters:\n  tie: True\nstep:1/10 train_loss:6.0 train_time:10ms step_avg:10.00ms\n"
    env = effective_config(_sub(tmp_path, {"train_gpt.py": code, "train_seed1.log": log}))
    assert env["TIE_EMBEDDINGS"] == "1"


def test_readme_smoke_test_command_is_not_the_run(tmp_path):
    readme = (
        "## Run\n```bash\nITERATIONS=20000 TTT_ENABLED=1 torchrun --nproc_per_node=8 train_gpt.py\n```\n"
        "## Quick test (1xH100)\n```bash\nITERATIONS=200 MAX_WALLCLOCK_SECONDS=0 \\\n"
        "  torchrun --nproc_per_node=1 train_gpt.py\n```\n"
    )
    code = 'import os\nclass H:\n    iterations = int(os.environ.get("ITERATIONS", 20000))\n'
    env = effective_config(_sub(tmp_path, {"train_gpt.py": code, "README.md": readme}))
    assert env == {"ITERATIONS": "20000", "TTT_ENABLED": "1"}


def test_log_wins_over_readme(tmp_path):
    readme = "```\nITERATIONS=9000 torchrun --nproc_per_node=8 train_gpt.py\n```\n"
    code = 'import os\nclass H:\n    iterations = int(os.environ.get("ITERATIONS", 20000))\n'
    log = "Hyperparameters:\n  iterations: 7000\nstep:1/10 train_loss:6.0 train_time:10ms step_avg:10.00ms\n"
    cfg = build_config(_sub(tmp_path, {"train_gpt.py": code, "README.md": readme, "train_seed1.log": log}))
    assert cfg.effective()["ITERATIONS"] == "7000" and cfg.source_of("ITERATIONS") == "train_seed1.log"


def _elapsed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def test_hostile_readme_line_is_linear(tmp_path):
    # 122 bytes: `A=A=...=A c` made the old `^(?:[A-Z][A-Z0-9_]*=\S+\s*)+$` backtrack exponentially
    line = "A=" * 60 + " c"
    assert len(line) == 122
    code = 'import os\nx = os.environ.get("AA", "1")\n'
    sub = _sub(tmp_path, {"train_gpt.py": code, "README.md": (line + "\n") * 20})
    assert _elapsed(lambda: build_config(sub)) < 2.0


def test_hostile_log_lines_are_bounded():
    # 200 KB lines built to make backtracking patterns quadratic (runs of spaces after a label / calibration word)
    lines = [
        "  a: " + " " * 200_000 + "x",
        "gptq" + " " * 200_000 + "x",
        "final_x" + " " * 200_000 + "val_loss:1.0",
        "step:1/2 " + "a:1 " * 50_000 + "x",
    ]
    text = "Hyperparameters:\n" + "\n".join(lines) + "\nstep:1/10 train_loss:6.0 train_time:10ms step_avg:10.00ms\n"
    t = _elapsed(lambda: parse_log(text, "train_seed1.log"))
    assert t < 1.0
    assert parse_log(text).steps == [(1, 10, 6.0, 10.0, 10.0)]


def test_values_the_script_cannot_parse_are_not_settings(tmp_path):
    code = ('import os\nclass H:\n    late_qat = int(os.environ.get("LATE_QAT", "0"))\n'
            '    seed = int(os.environ.get("SEED", 1337))\n    dim = int(os.environ.get("MODEL_DIM", 512))\n')
    log = ("late_qat:enabled step:4000\n    MODEL_DIM=args.model_dim,\n"
           "step:1/10 train_loss:6.0 train_time:10ms step_avg:10.00ms\n")
    readme = "```\nSEED=$SEED torchrun --nproc_per_node=8 train_gpt.py\n```\n"
    cfg = build_config(_sub(tmp_path, {"train_gpt.py": code, "train_seed1.log": log, "README.md": readme}))
    env = cfg.effective()
    assert "LATE_QAT" not in env and "MODEL_DIM" not in env and "SEED" not in env
    assert cfg.env_value("LATE_QAT") == "0"  # the code default, not the log event


def test_log_events_are_not_exported(tmp_path):
    code = 'import os\nclass H:\n    iterations = int(os.environ.get("ITERATIONS", 20000))\n'
    log = ("model_params:17059912\nval_bpb:enabled tokenizer_kind=sentencepiece\niterations:7000 warmup_steps:20\n"
           "step:1/10 train_loss:6.0 train_time:10ms step_avg:10.00ms\n")
    env = effective_config(_sub(tmp_path, {"train_gpt.py": code, "train_seed1.log": log}))
    assert env == {"ITERATIONS": "7000"}
