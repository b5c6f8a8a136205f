"""The dynamic audit's rule ids (PG4D*, PG5D*, PG9xx) as registered classes with kind = "dynamic".

They are emitted by the sandboxed run (auditor.dynamic.analyze), never by check(); registering them gives
--list-rules, --explain, SARIF descriptors and auditor.dynamic.RULES one source. Their executable examples are the
dynamic fixtures (tests/fixtures, docs/dynamic-audit.md), which need torch, so LEGAL/ILLEGAL stay empty here.
This module imports nothing heavy: the sandboxed child imports auditor.dynamic, which reads this registry."""

from __future__ import annotations

from auditor.rules.base import Rule, register


class _Dynamic(Rule):
    kind = "dynamic"


def _rule(rid: str, level: str, title: str, why: str, fix: str):
    return register(type(rid, (_Dynamic,), {"id": rid, "level": level, "title": title, "why": why, "fix": fix,
                                            "__module__": __name__, "__doc__": title}))


_SCORE = ("Each validation token must be scored once, by a model that has not been trained on it, from a "
          "distribution that depends only on the artifact and the strict prefix (challenge rules).")

PG4D1 = _rule(
    "PG4D1", "error",
    "score-after-update: a reported validation position was scored by weights already trained on it",
    _SCORE + " The provenance ledger saw an optimizer step on a loss over a validation position before that "
    "position's score was accumulated into the reported metric.",
    "Score each chunk under no_grad/inference_mode first, then train on it (score-first TTT); never fine-tune on "
    "validation tokens before scoring them.",
)
PG4D2 = _rule(
    "PG4D2", "error",
    "causality: a recorded score changed when only later validation tokens changed",
    _SCORE + " Changing only tokens after position j changed the score of a position before j, so the score used "
    "future tokens (two-pass caches, per-window fitting on the scored region).",
    "Build caches and per-window parameters from already scored tokens only.",
)
PG4D3 = _rule(
    "PG4D3", "error",
    "normalization: the scored probabilities over the vocabulary do not sum to 1",
    _SCORE + " The probabilities the scoring path assigns to the possible targets of one position must sum to 1.",
    "Renormalize over the whole vocabulary (softmax over all tokens); do not gate or key on the realized target.",
)
PG5D1 = _rule(
    "PG5D1", "error",
    "training data read after the training phase",
    "Training data may be used only within the 600 s training budget; reading it at evaluation time uses data "
    "outside the artifact.",
    "Finish calibration (GPTQ) inside the training budget, or reserve time for it and show it in the logs.",
)
PG5D2 = _rule(
    "PG5D2", "error",
    "validation data read during training",
    "Validation tokens may not be used for training or stored in the artifact.",
    "Read validation shards only in the evaluation phase.",
)
PG5D3 = _rule(
    "PG5D3", "error",
    "network access attempted",
    "The artifact must be self-contained: no downloads or hub access during training or evaluation.",
    "Ship everything the run needs in the artifact; remove network calls.",
)
PG5D4 = _rule(
    "PG5D4", "error",
    "sandbox violation (secret read, write outside the work dir, process creation, auditor tampering)",
    "A submission may not read secrets, write outside its working directory, spawn processes or tamper with the "
    "auditor's instrumentation. Lower levels for what records do in good faith: running a compiler or an external "
    "compressor (g++, setup.py build_ext, lrzip; blocked, so the rest of the run is unobserved), looking for a "
    "credential file in the sandbox's empty home or a credential variable (warnings); system-info commands and "
    "ctypes.util.find_library's ldconfig/gcc/ld probes, answered without running anything (notes).",
    "Remove the offending access (the message names it).",
)
PG5D5 = _rule(
    "PG5D5", "warning",
    "resource limit hit (wall clock, memory)",
    "The tiny dynamic run has a wall-clock and memory limit; a run that hits it was not fully observed.",
    "Check that the script honours the size environment the audit sets (tiny model, few steps), or raise --timeout.",
)
PG5D6 = _rule(
    "PG5D6", "warning",
    "submission entry not copied into the sandbox (symlink, special file, or over the copy caps)",
    "The dynamic audit runs a copy of the submission made of regular files only: a symlink (to a secret, "
    "/proc/self/environ, /dev/zero) or a FIFO is never followed or read, and sizes and file counts are capped.",
    "Ship regular files; a record folder needs no symlinks or device files.",
)
PG9D1 = _rule(
    "PG9D1", "error",
    "the sandboxed run's results were missing, malformed or oversized (no dynamic verdict)",
    "The child's results are untrusted data: they are read through a capped channel and schema-checked. Results that "
    "fail the check cannot be judged, so the audit's verdict is error, never pass.",
    "Make sure the script does not write to or close the auditor's results descriptor and does not exit the "
    "interpreter abruptly (os._exit) before the runs finish.",
)
PG900 = _rule(
    "PG900", "warning",
    "the dynamic audit could not run the script (the static verdict stands)",
    "The dynamic audit is evidence in addition to the static one; a script it cannot run on CPU is not judged by it.",
    "Read the message (missing dependency, CUDA-only code path) and rerun with a fix if the script should run.",
)
PG901 = _rule(
    "PG901", "note",
    "the dynamic audit needs a GPU for this script (a kernel the CPU interpreter cannot run)",
    "Some records launch GPU kernels (Triton, inline PTX) on the path the tiny run takes; the CPU shims interpret "
    "the common Triton kernels, and report the others by name instead of guessing their result.",
    "Audit on a machine with a GPU, or give the script a CPU fallback for that kernel; the static verdict stands.",
)
PG902 = _rule(
    "PG902", "note",
    "the dynamic audit needs a newer Python for this script's syntax",
    "The submission runs under the interpreter the audit is given; code written for a newer Python (f-strings of "
    "PEP 701 need 3.12) does not parse under an older one.",
    "Pass an interpreter of that version with torch and numpy installed: `pgolf audit --dynamic --python PATH`.",
)
PG903 = _rule(
    "PG903", "note",
    "the dynamic audit could not shrink the run enough for CPU (hard-coded sizes)",
    "The tiny run shrinks depth, width, iterations, sequence and batch through the script's environment knobs; a "
    "script that hard-codes them keeps the record's size, which a CPU cannot run within the time limit.",
    "Read sizes from the environment (NUM_LAYERS, MODEL_DIM, ITERATIONS, TRAIN_SEQ_LEN, TRAIN_BATCH_TOKENS), raise "
    "--timeout, or audit on a GPU; the static verdict stands.",
)
PG9D0 = _rule(
    "PG9D0", "note",
    "dynamic audit summary (phase timings)",
    "Phase timings of the tiny run next to the times the submission's logs report, for a reviewer.",
    "Nothing to fix: informational.",
)

DYNAMIC_RULES = {c.id: c for c in (PG4D1, PG4D2, PG4D3, PG5D1, PG5D2, PG5D3, PG5D4, PG5D5, PG5D6, PG900, PG9D1,
                                                PG901, PG902, PG903, PG9D0)}
