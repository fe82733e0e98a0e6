"""The package's version, written here only: pyproject.toml reads it for the package metadata.

Kept in code rather than read back from the installed metadata, so that importing the package
scans no distribution metadata and an editable install never reports a stale version.
"""

__version__ = "0.1.0"
