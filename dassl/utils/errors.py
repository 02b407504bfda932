"""Errors whose message is the whole story: train.py prints them in one or two lines, without a traceback."""
from __future__ import annotations

__all__ = [
    "UserError",
    "ConfigError",
    "DataError",
    "DiskFullError",
    "NonFiniteError",
    "CheckpointError",
    "CorruptCheckpointError",
    "CheckpointMismatchError",
    "FolderNotWritableError",
]


class UserError(Exception):
    """A mistake in what the user gave (flags, config, data, folders) or a refused run, fully explained.

    train.py prints the message alone and exits non-zero; ``--debug`` shows the traceback. Anything
    else that escapes is treated as a bug and keeps its traceback.
    """


class ConfigError(UserError, ValueError):
    """A config file, override or value that does not fit the schema or the valid choices."""


class DataError(UserError, ValueError):
    """A data file with bad content (split file, annotation, cache), named with the entry."""


class DiskFullError(UserError, OSError):
    """No space left while writing a file; nothing already on disk was damaged."""


class NonFiniteError(UserError, FloatingPointError):
    """NaN or inf where a number must be finite (a loss, logits); no result is reported from them."""


class CheckpointError(UserError, RuntimeError):
    """A checkpoint (or its pointer file) that cannot be read as one; the message names the file."""


class CorruptCheckpointError(CheckpointError):
    """A checkpoint whose bytes changed after it was written (its checksums do not match)."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint that does not fit the model: learned keys missing, unexpected, or of another shape."""


class FolderNotWritableError(UserError, PermissionError):
    """A folder the run must write into (output, or the dataset's cache) refuses writes."""
