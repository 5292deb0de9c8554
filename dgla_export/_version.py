"""The package's one version string (pyproject.toml reads it; records and metadata name it)."""

__version__ = "0.2.0"
