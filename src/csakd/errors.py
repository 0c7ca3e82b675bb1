"""Exceptions that csakd raises for problems a user can fix."""

from __future__ import annotations


class CsakdError(Exception):
    """Base class of csakd's own errors; the CLI prints these as one line, no traceback."""


class InputError(CsakdError, ValueError):
    """A file, array or argument is not what was expected (the message says what was wrong and what was expected)."""


class OutputExistsError(CsakdError, FileExistsError):
    """An output path exists and overwriting was not asked for."""


class CheckpointError(CsakdError, ValueError):
    """A checkpoint cannot be used with the model or data it was given."""
