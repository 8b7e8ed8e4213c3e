"""The package version (a leaf: imported by modules that record it, importing nothing).

The one place it is written: ``setup.cfg`` reads it (``version = attr: robust_mix.version.__version__``) into the
installed metadata, and ``robust-mix --version`` prints it.
"""

__version__ = "0.1.0"
