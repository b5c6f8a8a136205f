"""The one exception type for user-facing errors: its message is a single line (what, where, expected vs got)."""


class PgolfError(Exception):
    """Bad input or an impossible request. The CLI prints `pgolf: error: <message>` and exits nonzero."""
