"""`python -m trainer ...` (and `torchrun -m trainer train ...`) is the same as `pgolf ...`."""

import sys

from trainer.cli import main

sys.exit(main())
