"""The size, timing and data rules (PG1xx/PG2xx/PG3xx/PG5xx) on real record folders from ../shared/submissions:
what the maintainers accepted passes them, the data violations they rejected are errors at the proving line."""

from functools import lru_cache
from pathlib import Path

import pytest

from auditor.config import build_config
from auditor.flow import Program
from auditor.rules import AuditContext, static_rule_classes
from auditor.source import discover, load_submission

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "submissions"
pytestmark = pytest.mark.skipif(not CORPUS.is_dir(), reason="../shared/submissions is absent")


@lru_cache(maxsize=None)
def _findings(rel: str) -> list:
    sub = load_submission(*discover([CORPUS / rel])[0])
    cfg = build_config(sub)
    prog = Program(sub.units, cfg) if sub.analysable and sub.units else None
    ctx = AuditContext(sub=sub, cfg=cfg, prog=prog)
    mine = [c for c in static_rule_classes() if c.id[:3] in ("PG1", "PG2", "PG3", "PG5")]
    return [f for c in mine for f in c().check(ctx)]


def _errors(rel: str) -> list:
    return [(f.rule, f.file, f.line) for f in _findings(rel) if f.level == "error"]


@pytest.mark.parametrize(
    "rel",
    [
        "accepted/main-2026-03-18_FP16Embed_WD3600",  # baseline: loader, warm-up, loader re-created, main loop
        "clean/pr1019",  # GPTQ on self-generated data for 197 s after the 600 s loop
        "clean/pr1047",  # GPTQ on train data inside GPTQ_RESERVE_MS; compressed code copy in the total
        "clean/pr1493",  # Hessians 0.8 s over their 12 s reserve: a warning
        "clean/pr1855",  # readable 158 KB script, compressed copy counted; Hessians 4.3 s over the reserve
        "clean/pr77",  # one log on 2 GPUs for 2400 s (same GPU-time as 600 s on 8)
        "clean/pr1431",  # dataset download at start-up; no README/submission.json/log shipped
    ],
)
def test_accepted_practice_has_no_error(rel):
    if not (CORPUS / rel).is_dir():
        pytest.skip(f"{rel} absent")
    assert _errors(rel) == []


@pytest.mark.parametrize(
    "rel,rule,file,line",
    [
        ("illegal/pr593", "PG501", "train_gpt.py", 2084),  # calib_loader over train_files after the loop
        ("illegal/pr1028", "PG501", "train_gpt.py", 3302),  # gptq_calibrate_loop_aware(..., args.train_files)
        ("illegal/pr168", "PG502", "build_prefix_blob.py", 54),  # val tokens lzma-compressed into a blob
        ("illegal/pr262", "PG502", "build_prefix_fast.py", 56),
        ("illegal/pr44", "PG502", "README.md", 13),  # ln -s fineweb_val_000000.bin .../fineweb_train_000000.bin
        ("accepted/main-2026-03-23_DGAttention_DavidGao", "PG101", "train.log", 93),  # logged 16,638,468 bytes
    ],
)
def test_rejected_patterns_are_errors_at_the_proving_line(rel, rule, file, line):
    if not (CORPUS / rel).is_dir():
        pytest.skip(f"{rel} absent")
    assert (rule, file, line) in _errors(rel)


def test_one_finding_per_root_cause_listing_the_logs():
    rel = "clean/pr1855"
    if not (CORPUS / rel).is_dir():
        pytest.skip(f"{rel} absent")
    fs = _findings(rel)
    pg102 = [f for f in fs if f.rule == "PG102"]
    assert len(pg102) == 1 and pg102[0].level == "warning"
    assert all(s in pg102[0].message for s in ("train_seed0.log", "train_seed1234.log", "train_seed42.log"))
    assert "158429" in pg102[0].message  # the shipped file's size, next to the logged compressed one
    pg302 = [f for f in fs if f.rule == "PG302"]
    assert len(pg302) == 1 and pg302[0].level == "warning" and pg302[0].line == 176  # `GPTQ:collected ... 4.9s`
