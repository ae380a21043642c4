"""The version of fastspiral, written once.

The package, its metadata (pyproject.toml) and results files read it here.
"""

__version__ = "0.1.0"
