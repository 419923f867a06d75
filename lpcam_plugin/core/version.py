"""The package version, in one place (``setup.cfg`` reads it; files the package writes record it)."""
__version__ = "0.4.0"
