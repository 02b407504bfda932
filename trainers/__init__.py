"""Prompt-learning methods on CLIP; importing the package registers every trainer, its config keys, and
``TRAIN.MEMORY_BUDGET_GB`` (``chunking``), the memory budget of the image-conditioned methods."""
from . import chunking, cocoop, coop, gopro, ivlp, kgcoop, maple, promptsrc, vpt, zsclip  # noqa: F401

__all__ = ["chunking", "cocoop", "coop", "gopro", "ivlp", "kgcoop", "maple", "promptsrc", "vpt", "zsclip"]
