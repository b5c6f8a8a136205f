"""PG407: the run instructions execute a second Python script that evaluates, and the legality analysis never saw it.

The legality rules analyse train_gpt.py and the modules it imports. Some submissions produce their reported score
with a companion script the README or a run script launches (`torchrun ... eval_ngram_on_checkpoint.py`); whatever
that script does at evaluation time is unverified, which a reviewer must know.
"""

from __future__ import annotations

import re

from auditor.rules.base import Example, Rule, register

_RUN = re.compile(r"(?:\bpython3?(?:\s+-\S+)*|\btorchrun\b[^\n]*?|\baccelerate\s+launch\b[^\n]*?)\s+([\w./-]+\.py)\b")
_EVAL_CODE = re.compile(r"val_bpb|val_loss|eval_val|fineweb_val|cross_entropy")
_MAX_SCRIPT = 4_000_000


def _run_commands(sub):
    """(file, line, script) for every `python X.py` / `torchrun ... X.py` in the README and run scripts."""
    texts = []
    if sub.readme_rel and sub.readme_text:
        texts.append((sub.readme_rel, sub.readme_text))
    texts += sorted(getattr(sub, "scripts", {}).items())
    for rel, text in texts:
        for i, line in enumerate(text.splitlines(), 1):
            for m in _RUN.finditer(line):
                yield rel, i, m.group(1).lstrip("./")


@register
class PG407(Rule):
    id, level = "PG407", "warning"
    title = "the run instructions execute an evaluation script the audit did not analyse"
    why = (
        "Evaluation legality is checked on the code that produces the reported score. A companion script launched by "
        "the README or a run script (not imported by train_gpt.py) is outside that analysis, so its evaluation "
        "(caches, mixtures, adaptation) is unverified."
    )
    fix = "Evaluate inside train_gpt.py (or a module it imports), or make the companion script import-only."
    LEGAL = (
        Example(
            "readme_runs_only_the_entry",
            {
                "train_gpt.py": "import torch\nprint('val_bpb:1.2')\n",
                "README.md": "```\ntorchrun --standalone --nproc_per_node=8 train_gpt.py\n```\n",
            },
        ),
    )
    ILLEGAL = (
        Example(
            "readme_runs_a_separate_eval_script",
            {
                "train_gpt.py": "import torch\nprint('training only')\n",
                "eval_on_checkpoint.py": "import torch\nprint('final val_bpb:1.0')\n",
                "README.md": "## Run\n```\ntorchrun --nproc_per_node=8 train_gpt.py\n"
                "torchrun --standalone --nproc_per_node=8 eval_on_checkpoint.py\n```\n",
            },
            points_at=(("README.md", 4),),
        ),
    )

    def check(self, facts):
        sub = facts.sub
        analysed = {u.rel for u in sub.units}
        seen = set()
        for rel, line, script in _run_commands(sub):
            if script in analysed or script in seen or "/" in script:
                continue
            try:
                text = sub.reader.read_bytes(script, _MAX_SCRIPT).decode("utf-8", "replace")
            except Exception:
                continue  # not a regular file of this folder
            if not _EVAL_CODE.search(text):
                continue
            seen.add(script)
            yield self.finding(
                f"{rel} runs `{script}`, a Python script that evaluates on validation data but is not imported by the "
                f"entry script, so the legality analysis did not see it; if it produces the reported score, its "
                f"evaluation (caches, mixtures, adaptation) is unverified. Evaluate inside the entry script or a "
                f"module it imports.",
                rel,
                line,
            )
