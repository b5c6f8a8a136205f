"""pgolf: the command line over the three parts (trainer, builder, auditor); it is the only package that sees all three."""
