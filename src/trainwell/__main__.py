"""``python -m trainwell`` (what ``torchrun -m trainwell`` runs)."""

import sys

from trainwell.cli import main

sys.exit(main())
