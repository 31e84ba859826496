"""The package's version: read by setuptools, written into every record and every signed manifest."""

__version__ = "0.1.0"
