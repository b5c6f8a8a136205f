"""pgolf builder: turns run directories into PR-ready record folders."""
