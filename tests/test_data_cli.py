"""`pgolf data`: help texts cover every option; subcommands run end to end; bad input is one `pgolf: error:` line."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pgolf.cli import main
from trainer.data_cli import add_parser
from trainer.shards import read_shard

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PGOLF_SHARED_DATA") or ROOT.parent / "shared" / "data")
SP1024 = SHARED / "tokenizers" / "fineweb_1024_bpe.model"


def _data_parser():
    top = argparse.ArgumentParser(prog="pgolf")
    sub = top.add_subparsers()
    p = add_parser(sub, "data", "data tools")
    subs = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    return p, subs.choices


def test_every_option_is_described():
    p, subs = _data_parser()
    assert set(subs) == {"fetch", "build", "stats"}
    top_help = p.format_help()
    for name in subs:
        assert name in top_help
    for name, sp in subs.items():
        text = sp.format_help()
        assert len(sp.description) > 80, name
        for action in sp._actions:
            assert action.help and len(action.help) > 10, (name, action.dest)
            for opt in action.option_strings:
                assert opt in text, (name, opt)
        assert "%%" not in text and "%(" not in text, f"unformatted percent sign in {name} help"


def test_help_through_the_entry_point():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for args in (["data", "--help"], ["data", "fetch", "--help"], ["data", "build", "--help"], ["data", "stats", "--help"]):
        r = subprocess.run([sys.executable, "-m", "pgolf", *args], capture_output=True, text=True, env=env, timeout=120)
        assert r.returncode == 0 and r.stdout.startswith("usage: pgolf data"), r.stderr
    r = subprocess.run([sys.executable, "-m", "pgolf", "data"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and "SUBCOMMAND" in r.stderr


def _error(capsys, argv) -> str:
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("pgolf: error: ") and err.count("\n") == 1
    return err


def test_build_and_stats_end_to_end(tmp_path, capsys):
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": f"Chapter {i}. It was a truth universally acknowledged, " * 20}) + "\n"
                            for i in range(12)))
    out = tmp_path / "out"
    assert main(["data", "build", "--text", str(docs), "--vocab-size", "300", "--val-docs", "2",
                 "--shard-tokens", "1e3", "--out", str(out)]) == 0
    log = capsys.readouterr().out
    assert "build: val: 2 documents" in log and "build: train: 10 documents" in log
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["shard_tokens"] == 1000 and manifest["tokenizer"]["vocab_size"] <= 300
    assert all(read_shard(out / f).size <= 1000 for f in manifest["splits"]["train"]["files"])
    tok = out / manifest["tokenizer"]["path"]
    assert main(["data", "stats", str(out), "--tokenizer", str(tok), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    for key in ("tokens", "documents", "bytes"):
        assert stats[key] == stats["splits"]["val"][key] + stats["splits"]["train"][key]
    assert stats["bytes_per_token"] == pytest.approx(stats["bytes"] / stats["tokens"], abs=1e-6)
    assert stats["documents"] == 12
    assert stats["splits"]["val"]["bytes"] == manifest["splits"]["val"]["bytes"]
    assert main(["data", "stats", str(out / "fineweb_val_000000.bin"), "--tokenizer", str(tok)]) == 0
    assert "fineweb_val_000000.bin" in capsys.readouterr().out


def test_fetch_from_local_mirror(tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("_fetch_tests", Path(__file__).with_name("test_data_fetch.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    make_hub = mod.make_hub
    hub = make_hub(tmp_path, train=2)
    assert main(["data", "fetch", "--repo-id", str(hub), "--train-shards", "1", "--out", str(tmp_path / "d")]) == 0
    out = capsys.readouterr().out
    assert "[4/4]" in out and "DATA_PATH=" in out
    err = _error(capsys, ["data", "fetch", "--repo-id", str(hub), "--train-shards", "5", "--out", str(tmp_path / "d")])
    assert "has only 2 train shards" in err


def test_cli_bad_input_errors(tmp_path, capsys):
    docs = tmp_path / "docs.jsonl"
    docs.write_text('{"text": "a"}\n{"text": "b"}\n')
    assert "give either --tokenizer or --vocab-size" in _error(
        capsys, ["data", "build", "--text", str(docs), "--tokenizer", "x.model", "--vocab-size", "512", "--out", str(tmp_path / "o")])
    assert "--val-docs 50000 leaves no training documents: the input has 2 documents" in _error(
        capsys, ["data", "build", "--text", str(docs), "--out", str(tmp_path / "o")])
    assert "input " in _error(capsys, ["data", "build", "--text", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "o")])
    assert "tokenizer " in _error(capsys, ["data", "stats", str(tmp_path / "none"), "--tokenizer", str(tmp_path / "t.model")])
    assert "--variant 'bytes': expected sp<vocab>" in _error(capsys, ["data", "fetch", "--variant", "bytes", "--out", str(tmp_path / "o")])
    with pytest.raises(SystemExit) as info:
        main(["data", "build", "--out", str(tmp_path / "o"), "--shard-tokens", "1.5"])
    assert info.value.code == 2
    assert "expected an integer, got '1.5'" in capsys.readouterr().err
