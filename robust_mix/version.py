"""The package version (a leaf: imported by modules that record it, importing nothing)."""

__version__ = "0.1.0"
