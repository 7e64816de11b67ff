"""The package version, in a leaf module: every room may read it."""

__version__ = "0.2.0"
