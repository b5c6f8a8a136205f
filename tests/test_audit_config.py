"""Effective configuration: code defaults < BAKED_CONFIG < README / run scripts < logs."""

from auditor.config import build_config, effective_config
from auditor.source import discover, load_submission

CODE = """import os
BAKED_CONFIG = {"NGRAM_ENABLED": 1}
class Hyperparameters:
    ttt_enabled = bool(int(os.environ.get("TTT_ENABLED", "0")))
    ttt_lr = float(os.environ.get("TTT_LR", 0.002))
    ngram = int(os.getenv("NGRAM_ENABLED", "0"))
    seed = int(os.environ.get("SEED", 1337))
"""


def _sub(tmp_path, files):
    for k, v in files.items():
        (tmp_path / k).write_text(v)
    return load_submission(*discover([tmp_path])[0])


def test_precedence_defaults_baked_readme_script_logs(tmp_path):
    sub = _sub(
        tmp_path,
        {
            "train_gpt.py": CODE,
            "README.md": "Run:\n```bash\nTTT_ENABLED=1 TTT_LR=0.005 \\\n  SEED=42 torchrun --nproc_per_node=8 train_gpt.py\n```\n"
            "Ablation (not the run): set FOO=1 to try\n",
            "run.sh": "export TTT_LR=0.004\n",
            "train_seed42.log": "Hyperparameters:\n  ttt_lr: 0.003\n  seed: 42\nstep:1/10 train_loss:6.0 train_time:1ms step_avg:1.00ms\n",
        },
    )
    env = effective_config(sub)
    assert env == {"NGRAM_ENABLED": "1", "SEED": "42", "TTT_ENABLED": "1", "TTT_LR": "0.003"}
    full = effective_config(sub, include_defaults=True)
    assert full["TTT_LR"] == "0.003" and full["SEED"] == "42"
    assert "FOO" not in full
    cfg = build_config(sub)
    assert cfg.attr_value("ttt_enabled") is True and cfg.attr_value("ngram") == 1
    assert cfg.source_of("TTT_ENABLED") == "README.md"


def test_path_argument_and_defaults_only(tmp_path):
    (tmp_path / "train_gpt.py").write_text(CODE)
    assert effective_config(tmp_path) == {"NGRAM_ENABLED": "1"}
    assert effective_config(tmp_path / "train_gpt.py", include_defaults=True)["TTT_ENABLED"] == "0"


def test_env_helper_lambda_and_function(tmp_path):
    code = (
        'import os\nE = lambda k, d: os.environ.get(k, d)\ndef flag(name, default="0"):\n'
        "    return int(os.environ.get(name, default))\n"
        'class H:\n    ttt_on = int(E("TTT_ON", "0"))\n    ngram = flag("NGRAM_ON", "1")\n'
    )
    (tmp_path / "train_gpt.py").write_text(code)
    env = effective_config(tmp_path / "train_gpt.py", include_defaults=True)
    assert env["TTT_ON"] == "0" and env["NGRAM_ON"] == "1"
