"""User-facing error types: anything a user can cause is raised as a CifarkitError."""

from __future__ import annotations


class CifarkitError(Exception):
    """A mistake the user can fix; the CLI prints it as one line without a traceback."""


class DataError(CifarkitError):
    """A dataset is missing, unreadable or malformed."""


class CheckpointError(CifarkitError):
    """A checkpoint is missing, not a cifarkit checkpoint, or does not fit the data."""


class ConfigError(CifarkitError, ValueError):
    """A configuration value is out of range or unknown."""
