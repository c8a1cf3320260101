"""The package version, in the lowest layer so that every layer can read it without importing upward."""

__version__ = "0.1.0"
