"""``python -m robust_mix.cli`` (and ``torchrun -m robust_mix.cli``)."""
import sys

from robust_mix.cli import main

sys.exit(main())
