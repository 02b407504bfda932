"""Prompt-learning methods on CLIP; importing the package registers every trainer."""
from . import cocoop, coop, gopro, ivlp, kgcoop, maple, promptsrc, vpt, zsclip  # noqa: F401

__all__ = ["cocoop", "coop", "gopro", "ivlp", "kgcoop", "maple", "promptsrc", "vpt", "zsclip"]
