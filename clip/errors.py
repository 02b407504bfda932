"""Why a CLIP could not be loaded as asked: errors whose message is the whole story for the user.

Each also subclasses the built-in type raised before it existed, so ``except FileNotFoundError`` (or
``ValueError``, ``RuntimeError``) around ``clip.load`` keeps working. Command lines may print
``BackboneLoadError`` messages alone, without a traceback (train.py does).
"""
from __future__ import annotations

__all__ = [
    "BackboneLoadError",
    "CheckpointFormatError",
    "CorruptDownloadError",
    "UnsupportedBackboneError",
    "WeightsNotFoundError",
]


class BackboneLoadError(Exception):
    """A CLIP that cannot be loaded from what the user named (a name, a tag, a file); the message says why."""


class WeightsNotFoundError(BackboneLoadError, FileNotFoundError):
    """A checkpoint is neither on disk nor downloadable; the message says which file to put where."""


class UnsupportedBackboneError(BackboneLoadError, ValueError):
    """A name that is no known CLIP, or an architecture whose towers this package cannot run exactly."""


class CheckpointFormatError(BackboneLoadError, ValueError):
    """A file that exists but holds no OpenAI-format CLIP whose architecture its tensors determine."""


class CorruptDownloadError(BackboneLoadError, RuntimeError):
    """Downloaded weights whose checksum is not the released file's; nothing was saved."""
