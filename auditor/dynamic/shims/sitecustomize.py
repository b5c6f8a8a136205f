"""Loaded at interpreter start of the dynamic-audit child (PYTHONPATH points here). Does nothing elsewhere."""

import os

if os.environ.get("PGOLF_DYNAMIC_CHILD") == "1":
    import pgolf_guard

    pgolf_guard.install()  # the audit hook exists from the start; it is armed by the runner
    import torch  # noqa: F401  (start-up loads native libraries the armed guard would refuse)

    import pgolf_probe
    import pgolf_shims

    pgolf_shims.install()
    pgolf_probe.install()
