"""PG006: files of the submission the audit refuses to read (symlinks, devices, FIFOs, sockets, folder budgets).

Emitted while the folder is read (auditor.fsread / auditor.source), so check() is the base no-op; the class carries
the documentation and the examples. An example file whose text is a `Link` is materialized as a symlink to it."""

from __future__ import annotations

from auditor.rules.base import Example, Rule, register


class Link(str):
    """Example file content meaning "this file is a symlink to <the string>"."""


_OK = 'import os\n\n\ndef main():\n    print(os.environ.get("SEED", "1337"))\n\n\nmain()\n'


@register
class PG006(Rule):
    id, level, title = "PG006", "error", "file not read: symlink, special file, or over the folder's reading budget"
    why = ("A record folder is untrusted input. A symlink (README.md -> /proc/self/environ, -> ../.env) would put the "
           "reviewer's secrets into the report; a FIFO or /dev/zero would make the audit read forever. The audit "
           "reads regular files only, never through a link, and a bounded number of files and bytes; anything "
           "else is not what the challenge repository would receive anyway (it stores regular files).")
    fix = "Replace the link or device by the file itself, and ship only the record's files."
    LEGAL = (Example("regular_files", {"train_gpt.py": _OK, "README.md": "# notes\n"}),)
    ILLEGAL = (
        Example("readme_links_elsewhere", {"train_gpt.py": _OK, ".env": "TOKEN=x\n", "README.md": Link(".env")},
                points_at=(("README.md", 1),), note="README.md is a symlink: reported, never followed"),
    )
