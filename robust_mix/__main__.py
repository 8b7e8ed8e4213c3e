"""``python -m robust_mix``: the ``robust-mix`` console script (:func:`robust_mix.cli.main`)."""
import sys

from robust_mix.cli import main

sys.exit(main())
