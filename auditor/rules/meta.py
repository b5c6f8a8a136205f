"""PG00x: the auditor's own findings about the input (unreadable, unparsable or undecodable code) and about
suppressions. They are emitted while loading (auditor.source) and when suppressions are applied (auditor.suppress),
so these classes carry the documentation and the examples; their check() is the base no-op."""

from __future__ import annotations

from auditor.rules.base import Example, Rule, register

_OK = (
    'import os\n\n\ndef main():\n    print(os.environ.get("SEED", "1337"))\n\n\n'
    'if __name__ == "__main__":\n    main()\n'
)


@register
class PG001(Rule):
    id, level, title = "PG001", "error", "file unreadable, binary, empty or too large"
    why = ("The audit reads the code the submission ships. A train_gpt.py that is empty, binary, not UTF-8 or over "
           "the reading limit cannot be checked, so it cannot pass.")
    fix = "Ship the UTF-8 source of train_gpt.py that produced the logs."
    LEGAL = (Example("readable_script", {"train_gpt.py": _OK}),)
    ILLEGAL = (Example("empty_script", {"train_gpt.py": ""}, points_at=(("train_gpt.py", 1),),
                       note="an empty train_gpt.py: nothing to audit"),)


@register
class PG002(Rule):
    id, level, title = "PG002", "error", "file does not parse"
    why = "Code that does not parse cannot be analysed (and would not run)."
    fix = "Fix the syntax error the message names (the audit parses Python 3.12 syntax)."
    LEGAL = (Example("parses", {"train_gpt.py": _OK}),)
    ILLEGAL = (Example("syntax_error", {"train_gpt.py": "import os\n\n\nprint(1 +)\n"},
                       points_at=(("train_gpt.py", 4),), note="the incomplete expression on line 4"),)


@register
class PG003(Rule):
    id, level, title = "PG003", "error", "self-extracting payload cannot be decoded statically"
    why = ("A compressed wrapper is audited by decoding its payload without running it. A payload the audit cannot "
           "decode hides the code that produced the score.")
    fix = "Use a standard lzma/zlib + base85/base64 wrapper (or ship readable code)."
    LEGAL = (Example("plain_code", {"train_gpt.py": _OK}),)
    ILLEGAL = (
        Example(
            "corrupt_payload",
            {"train_gpt.py": 'import lzma as L,base64 as B\nexec(L.decompress(B.b85decode("VPa!RXk~0{")))\n'},
            points_at=(("train_gpt.py", 2),),
            note="the exec line of a wrapper whose payload is not a valid lzma stream",
        ),
    )


@register
class PG004(Rule):
    id, level, title = "PG004", "warning", "unused suppression"
    why = "A suppression that silences nothing is stale: it hides nothing today but would hide a future finding."
    fix = "Remove the comment (or the ids it lists that no finding on that line has)."
    LEGAL = (Example("no_suppression", {"train_gpt.py": _OK}),)
    ILLEGAL = (
        Example(
            "stale_ignore",
            {"train_gpt.py": _OK.replace("def main():\n", "def main():  # pgolf: ignore[PG401] scored first\n")},
            points_at=(("train_gpt.py", 4),),
            note="nothing is reported on line 4, so the suppression is unused",
        ),
    )


@register
class PG005(Rule):
    id, level, title = "PG005", "error", "suppression without a reason"
    why = "A reviewer must be able to judge a silenced finding: every suppression states why the code is legal."
    fix = "Write `# pgolf: ignore[PGnnn] <why this is legal>`."
    LEGAL = (Example("no_suppression", {"train_gpt.py": _OK}),)
    ILLEGAL = (
        Example(
            "ignore_without_reason",
            {"train_gpt.py": _OK.replace("def main():\n", "def main():  # pgolf: ignore[PG401]\n")},
            points_at=(("train_gpt.py", 4),),
        ),
    )
