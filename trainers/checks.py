"""Config checks the prompt methods share: each raises one line naming the key and what would be valid."""
from __future__ import annotations

from collections.abc import Sequence

from dassl.utils import ConfigError

from .class_prompts import token_counts

__all__ = ["check_input_size", "check_context_fits"]


def check_input_size(cfg, clip_model) -> None:
    """INPUT.SIZE must be the backbone's square input resolution."""
    size = tuple(cfg.INPUT.SIZE)
    expected = (clip_model.image_size, clip_model.image_size)
    if size != expected:
        raise ConfigError(
            f"INPUT.SIZE is {size} but the backbone {cfg.MODEL.BACKBONE.NAME!r} takes {expected}; set INPUT.SIZE {expected}"
        )


def check_context_fits(n_ctx: int, classnames: Sequence[str], context_length: int, key: str) -> None:
    """N_CTX context tokens plus the longest class prompt must fit the text tower's context length."""
    counts = token_counts([f"{name.replace('_', ' ')}." for name in classnames])  # as ClassPrompts builds them
    longest = max(range(len(counts)), key=counts.__getitem__)
    needed = n_ctx + counts[longest]
    if needed > context_length:
        raise ConfigError(
            f"{key} {n_ctx} + class name {classnames[longest]!r} need {needed} tokens but the context length "
            f"is {context_length}; use {key} <= {context_length - counts[longest]}"
        )
