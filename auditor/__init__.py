"""pgolf auditor: static and dynamic checks of Parameter Golf submissions."""
