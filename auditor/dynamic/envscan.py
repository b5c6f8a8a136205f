"""What a script can be configured with: its `os.environ.get`/`os.getenv`/`os.environ[...]` names and literal
defaults (libcst), the run configuration recovered from the submission's logs/README, and the shrink plan that makes a
record-sized run tiny through the script's own knobs."""

from __future__ import annotations

import re
from pathlib import Path

import libcst as cst

from trainer.errors import PgolfError


_ENV_LIKE = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+")


class _EnvVisitor(cst.CSTVisitor):
    def __init__(self):
        self.names: dict[str, str | None] = {}

    @staticmethod
    def _is_environ(node) -> bool:
        return (isinstance(node, cst.Attribute) and node.attr.value == "environ"
                and isinstance(node.value, cst.Name) and node.value.value == "os") or (
            isinstance(node, cst.Name) and node.value == "environ")

    @staticmethod
    def _literal(node) -> str | None:
        if isinstance(node, cst.SimpleString):
            return node.evaluated_value if isinstance(node.evaluated_value, str) else None
        if isinstance(node, (cst.Integer, cst.Float)):
            return node.value.replace("_", "")
        if isinstance(node, cst.UnaryOperation) and isinstance(node.operator, cst.Minus):
            inner = _EnvVisitor._literal(node.expression)
            return None if inner is None else "-" + inner
        if isinstance(node, cst.Call) and node.args:  # str(1024), int("8")
            return _EnvVisitor._literal(node.args[0].value)
        return None

    def _add(self, name_node, default_node) -> None:
        name = self._literal(name_node)
        if name and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            default = self._literal(default_node) if default_node is not None else None
            if name not in self.names or self.names[name] is None:
                self.names[name] = default

    def visit_Call(self, node: cst.Call) -> None:
        f = node.func
        is_get = isinstance(f, cst.Attribute) and f.attr.value in ("get", "setdefault") and self._is_environ(f.value)
        is_getenv = (isinstance(f, cst.Attribute) and f.attr.value == "getenv") or (
            isinstance(f, cst.Name) and f.value == "getenv")
        if (is_get or is_getenv) and node.args:
            self._add(node.args[0].value, node.args[1].value if len(node.args) > 1 else None)
            return
        # table-driven configs: `field(default, "ENV_NAME", ...)`/`_f(1024, "VOCAB_SIZE", ...)` — an env-like
        # string argument right after a literal default
        for i, arg in enumerate(node.args):
            name = self._literal(arg.value) if isinstance(arg.value, cst.SimpleString) else None
            if not name or name in self.names or not re.fullmatch(r"[A-Z][A-Z0-9_]{2,}", name):
                continue
            prev = node.args[i - 1].value if i > 0 else None
            default = self._literal(prev) if prev is not None else None
            if _ENV_LIKE.fullmatch(name) or default is not None:
                self.names[name] = default

    def visit_Subscript(self, node: cst.Subscript) -> None:
        if self._is_environ(node.value) and len(node.slice) == 1 and isinstance(node.slice[0].slice, cst.Index):
            self._add(node.slice[0].slice.value, None)


def scan_env(source: str, where: str = "train_gpt.py") -> dict[str, str | None]:
    """{ENV_NAME: literal default or None} for every environment variable the script reads."""
    try:
        module = cst.parse_module(source)
    except (cst.ParserSyntaxError, cst.CSTValidationError, RecursionError, ValueError):
        # syntax newer than the parser knows (or not Python): the plain `os.environ.get("NAME", default)` shapes
        return _scan_env_text(source)
    v = _EnvVisitor()
    module.visit(v)
    return v.names


_ENV_CALL = re.compile(r"""(?:environ\.get|getenv|environ\.setdefault)\(\s*["']([A-Za-z_][A-Za-z0-9_]*)["']"""
                       r"""(?:\s*,\s*(?:str\(|int\(|float\()?\s*["']?(-?[\w.]+)["']?)?""")
_ENV_SUB = re.compile(r"""environ\[\s*["']([A-Za-z_][A-Za-z0-9_]*)["']\s*\]""")


def _scan_env_text(source: str) -> dict[str, str | None]:
    names: dict[str, str | None] = {}
    for m in _ENV_CALL.finditer(source):
        if names.get(m.group(1)) is None:
            names[m.group(1)] = m.group(2)
    for m in _ENV_SUB.finditer(source):
        names.setdefault(m.group(1), None)
    return names


def _num(s) -> float | None:
    try:
        return float(s)
    except (TypeError, ValueError):
        return None


# (regex on the env name, tiny value or callable(default)->value). First match wins. Values keep the knobs'
# relations valid: heads divide width, kv heads divide heads, batch tokens cover 8 micro-batches of one sequence.
SEQ = 32
def _cap(n: int):
    """At most n, and a knob that is off (0, negative, empty) stays off."""
    return lambda d: str(min(int(_num(d)), n)) if (_num(d) or 0) > 0 else d


_SHRINK: list[tuple[str, object]] = [
    (r"^(NUM_LAYERS|N_LAYERS|N_LAYER|DEPTH|NUM_BLOCKS)$", "2"),
    (r"^(MODEL_DIM|D_MODEL|N_EMBD|HIDDEN_DIM|EMBED_DIM|EMBEDDING_DIM|WIDTH)$", "32"),
    (r"^(NUM_HEADS|N_HEADS|N_HEAD)$", "2"),
    (r"^(NUM_KV_HEADS|N_KV_HEADS|KV_HEADS)$", "1"),
    (r"^(HEAD_DIM)$", "16"),
    (r"^(ROPE_DIMS|ROTARY_DIMS)$", lambda d: "8" if (_num(d) or 0) > 0 else d),
    (r"^(MLP_HIDDEN)$", lambda d: "64" if (_num(d) or 0) > 0 else d),
    (r"^(ITERATIONS|NUM_ITERATIONS|NUM_STEPS|MAX_STEPS|TRAIN_STEPS)$", "2"),
    (r"^(WARMUP_STEPS|COMPILE_WARMUP_STEPS)$", "1"),
    (r"^(LR_WARMUP_STEPS|MUON_MOMENTUM_WARMUP_STEPS)$", "1"),
    (r"^(WARMDOWN_ITERS|WARMDOWN_STEPS)$", "2"),
    (r"^(TRAIN_SEQ_LEN|SEQ_LEN|BLOCK_SIZE|CONTEXT_LEN|ROPE_REF_SEQ_LEN)$", str(SEQ)),
    # every other sequence length (eval, TTT, TTT eval, rope reference): tiny when on, off stays off
    (r"SEQ_LEN$", lambda d: str(SEQ) if (_num(d) or 0) > 0 else d),
    (r"^(EVAL_STRIDE|SLIDING_STRIDE|STRIDE)$", lambda d: "8" if (_num(d) or 0) > 0 else d),
    (r"^(TRAIN_BATCH_TOKENS|BATCH_TOKENS)$", str(8 * SEQ * 2)),
    (r"^(VAL_BATCH_SIZE|VAL_BATCH_TOKENS|EVAL_BATCH_TOKENS)$", str(8 * SEQ * 2)),
    (r"^(EVAL_BATCH_SEQS|TTT_BATCH_SEQS|VAL_BATCH_SEQS|BATCH_SEQS)$", "4"),
    (r"_BATCH_SEQS$|^TTT\w*_BATCH_SIZE$", _cap(4)),
    (r"^(MAX_WALLCLOCK_SECONDS|WALLCLOCK_SECONDS|TRAIN_SECONDS)$", "60"),
    (r"^(VAL_LOSS_EVERY|EVAL_EVERY)$", "0"),
    (r"^(TRAIN_LOG_EVERY|LOG_EVERY)$", "1"),
    (r"^(VAL_MAX_TOKENS|VAL_TOKENS_LIMIT)$", "0"),
    # chunks of the stream (several sequences) vs chunks inside one evaluation window (a scoring stride, which must
    # stay below the shrunk window)
    (r"CHUNK_TOKENS$", _cap(64)),
    (r"CHUNK_SIZE$", _cap(SEQ // 2)),
    # two epochs, not one: a later epoch that rescores what an earlier one trained on is a pattern to observe
    (r"^(TTT_EPOCHS|TTT_STEPS)$|_TTT_EPOCHS$", _cap(2)),
    (r"LORA_RANK$", _cap(4)),
    # a minimum document length for TTT scales with the sequence (the tiny stream's documents are 97 tokens)
    (r"(MIN|SHORT)_DOC_LEN$", _cap(SEQ)),
    (r"^(GPTQ_CALIB_SEQS|GPTQ_CALIB_SAMPLES|CALIB_SEQS|CALIBRATION_SEQS|GPTQ_NSAMPLES|GPTQ_CALIB_BATCHES)$", "2"),
    (r"CALIB\w*_(BATCHES|SEQS|SAMPLES|TOKENS)$", _cap(2)),
    (r"^(GPTQ_BLOCK_SIZE)$", "16"),
    (r"^(BIGRAM_VOCAB_SIZE|BIGRAM_BUCKETS|HASH_BUCKETS)$", lambda d: "64" if (_num(d) or 0) > 0 else d),
    (r"^(BIGRAM_DIM|VE_DIM|VALUE_EMBED_DIM)$", "16"),
    (r"^(XSA_LAST_N)$", lambda d: "1" if (_num(d) or 0) > 0 else d),
    (r"^(GRAD_ACCUM_STEPS)$", lambda d: d),
    (r"^(SWA_EVERY)$", lambda d: "1" if (_num(d) or 0) > 0 else d),
    (r"^(SLOT_STEPS)$", lambda d: "2" if (_num(d) or 0) > 0 else d),
]

# Environment the harness owns: data paths, the single-rank launch, no GPU libraries' network lookups.
DATA_NAMES = re.compile(r"^(DATA_PATH|DATA_DIR|DATASET_DIR|DATASET_PATH)$")
TOKENIZER_NAMES = re.compile(r"^(TOKENIZER_PATH|TOKENIZER_MODEL|SP_MODEL_PATH|TOKENIZER)$")
# the single-rank launch the sandbox sets up; a logged WORLD_SIZE=8 must not reach the child
LAUNCH_NAMES = re.compile(r"^(WORLD_SIZE|RANK|LOCAL_RANK|LOCAL_WORLD_SIZE|NPROC_PER_NODE|NNODES|NODE_RANK|MASTER_ADDR|"
                          r"MASTER_PORT|CUDA_VISIBLE_DEVICES|TORCHELASTIC_\w+|NCCL_\w+)$")
# where a script writes (often baked as the author's absolute path): redirected into the sandbox's work dir
OUTPUT_NAMES = re.compile(r"^(OUT|OUTPUT|LOG|LOGS|RUN|RUNS|ARTIFACT|ARTIFACTS|CHECKPOINT|CKPT|SAVE|RESULTS?)_(DIR|PATH|ROOT)$")


# what a CPU run must be able to shrink; a script with no knob of a kind keeps the record's size for it
SIZE_KINDS = {
    "depth (layers)": r"^(NUM_LAYERS|N_LAYERS|N_LAYER|DEPTH|NUM_BLOCKS)$",
    "width": r"^(MODEL_DIM|D_MODEL|N_EMBD|HIDDEN_DIM|EMBED_DIM|WIDTH)$",
    "iterations": r"^(ITERATIONS|NUM_ITERATIONS|NUM_STEPS|MAX_STEPS|TRAIN_STEPS)$",
    "sequence length": r"^(TRAIN_SEQ_LEN|SEQ_LEN|BLOCK_SIZE|CONTEXT_LEN)$",
    "batch": r"^(TRAIN_BATCH_TOKENS|BATCH_TOKENS|BATCH_SIZE|TRAIN_BATCH_SIZE)$",
}


def hard_coded(names) -> list[str]:
    """Size kinds the script has no environment knob for."""
    return [k for k, pat in SIZE_KINDS.items() if not any(re.match(pat, n) for n in names)]


def shrink_plan(names: dict[str, str | None]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, default in names.items():
        for pat, val in _SHRINK:
            if re.search(pat, name):
                v = val(default) if callable(val) else val
                if v is not None:
                    out[name] = str(v)
                break
    _keep_layer_indices(names, out)
    return out


# knobs naming a layer index (a looped segment, where parallel lanes start): the shrunk depth must still hold them
_LAYER_INDEX = re.compile(r"^(\w+_)?(LOOP_START|LOOP_END)$|_(START|END|FIRST|LAST)_LAYER$|^(RECUR|REPEAT|SHARED)\w*_LAYERS$")
_DEPTH = re.compile(_SHRINK[0][0])


def _keep_layer_indices(names: dict[str, str | None], out: dict[str, str]) -> None:
    for dname in [n for n in out if _DEPTH.match(n)]:
        orig = _num(names.get(dname))
        idx = [int(i) for k, v in names.items() if _LAYER_INDEX.search(k) for i in re.findall(r"-?\d+", v or "")]
        idx = [i for i in idx if i >= 0 and (orig is None or i < orig)]
        if idx and max(idx) + 1 > int(out[dname]):
            out[dname] = str(max(idx) + 1)


def recover_config(submission: Path, script: Path, cfg=None) -> dict[str, str]:
    """The run's environment as documented by the submission: the effective configuration of auditor.config (`cfg`,
    its ConfigModel when the caller built it already), else `NAME=value` assignments in README/*.sh and the env
    header of its logs."""
    try:
        if cfg is None:
            from auditor.config import config_of  # written by the static auditor

            cfg = config_of(submission)
        env = cfg.effective() if cfg is not None else {}
        return {str(k): str(v) for k, v in env.items() if re.fullmatch(r"[A-Z][A-Z0-9_]*", str(k))}
    except Exception:  # noqa: BLE001 - missing or failing static helper: recover it ourselves below
        pass
    env: dict[str, str] = {}
    folder = submission if submission.is_dir() else submission.parent
    try:
        from auditor.logs import env_assignments, parse_log
    except Exception:  # noqa: BLE001
        env_assignments = parse_log = None
    for p in sorted(folder.glob("*")):
        if not p.is_file() or p.stat().st_size > 20_000_000:
            continue
        try:
            text = p.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        if p.suffix in (".md", ".sh", ".txt", "") and env_assignments is not None and p.suffix != ".txt":
            env.update(env_assignments(text))
        elif p.suffix in (".log", ".txt") and parse_log is not None:
            try:
                env.update({k: str(v) for k, v in parse_log(text, p.name).env.items()})
            except Exception:  # noqa: BLE001
                pass
    return env


def find_script(submission: Path) -> Path:
    if submission.is_file():
        return submission
    if not submission.is_dir():
        raise PgolfError(f"dynamic audit: {submission} does not exist (expected a record folder or a train_gpt.py)")
    for name in ("train_gpt.py",):
        if (submission / name).is_file():
            return submission / name
    cands = sorted(submission.glob("train*.py"))
    if not cands:
        raise PgolfError(f"dynamic audit: {submission} has no train_gpt.py (expected the submission's training script)")
    return cands[0]
