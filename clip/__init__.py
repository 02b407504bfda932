"""CLIP backbones for prompt learning, on open_clip: load by name or path, tokenize, per-layer image
features, exact truncated text encoding, and shallow/deep prompts in both towers."""
from . import tiny
from .backbone import CLIPBackbone
from .errors import (
    BackboneLoadError,
    CheckpointFormatError,
    CorruptDownloadError,
    UnsupportedBackboneError,
    WeightsNotFoundError,
)
from .loading import load, weights_file
from .names import available_models
from .tokenizer import tokenize
from .visual import VisionPrompts

__all__ = [
    "BackboneLoadError",
    "CLIPBackbone",
    "CheckpointFormatError",
    "CorruptDownloadError",
    "UnsupportedBackboneError",
    "VisionPrompts",
    "WeightsNotFoundError",
    "available_models",
    "load",
    "tiny",
    "tokenize",
    "weights_file",
]
