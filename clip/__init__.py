"""CLIP backbones for prompt learning, on open_clip: load by name or path, tokenize, per-layer image
features, and exact truncated text encoding from prompt embeddings."""
from . import tiny
from .backbone import CLIPBackbone
from .download import WeightsNotFoundError
from .loading import load
from .names import available_models
from .tokenizer import tokenize

__all__ = ["CLIPBackbone", "WeightsNotFoundError", "available_models", "load", "tiny", "tokenize"]
