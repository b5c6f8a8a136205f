"""`python -m pgolf ...` (and `torchrun -m pgolf train ...`) is the same as `pgolf ...`."""

import sys

from pgolf.cli import main

sys.exit(main())
