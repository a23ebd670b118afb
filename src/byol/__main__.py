"""``python -m byol`` (what ``torchrun -m byol train ...`` runs)."""

import sys

from .cli import main

sys.exit(main())
