"""Config checks the prompt methods share: each raises one line naming the key and what would be valid."""
from __future__ import annotations

from collections.abc import Sequence

from dassl.utils import ConfigError

from .class_prompts import token_counts

__all__ = ["check_input_size", "check_context_fits", "context_init_too_long"]


def check_input_size(cfg, clip_model) -> None:
    """INPUT.SIZE must be the backbone's square input resolution."""
    size = tuple(cfg.INPUT.SIZE)
    expected = (clip_model.image_size, clip_model.image_size)
    if size != expected:
        raise ConfigError(
            f"INPUT.SIZE is {size} but the backbone {cfg.MODEL.BACKBONE.NAME!r} takes {expected}; set INPUT.SIZE {expected}"
        )


def check_context_fits(n_ctx: int, classnames: Sequence[str], context_length: int, key: str,
                       ctx_init: str = "") -> None:
    """The context tokens plus the longest class prompt must fit the text tower's context length.

    ``key`` is the N_CTX key; with ``ctx_init`` set the context is its tokens, so the error names the
    CTX_INIT key beside it (the key the user set), not N_CTX.
    """
    counts = token_counts([f"{name.replace('_', ' ')}." for name in classnames])  # as ClassPrompts builds them
    longest = max(range(len(counts)), key=counts.__getitem__)
    needed = n_ctx + counts[longest]
    if needed <= context_length:
        return
    words = ctx_init.replace("_", " ").strip()
    if words:
        raise ConfigError(context_init_too_long(f"{key.rsplit('.', 1)[0]}.CTX_INIT", words, n_ctx,
                                                classnames[longest], counts[longest], context_length))
    raise ConfigError(
        f"{key} {n_ctx} + class name {classnames[longest]!r} need {needed} tokens but the context length "
        f"is {context_length}; use {key} <= {context_length - counts[longest]}"
    )


def context_init_too_long(init_key: str, words: str, n_words: int, classname: str, class_tokens: int,
                          context_length: int) -> str:
    """The one-line error of a CTX_INIT whose tokens and the longest class prompt overflow the context.

    ``class_tokens`` counts the class prompt "<name>." with SOS and EOT.
    """
    shown = words if len(words) <= 60 else words[:57] + "..."
    return (
        f"{init_key} {shown!r} has {n_words} tokens and the longest class name {classname!r} adds {class_tokens} "
        f"(its tokens, '.', SOS and EOT): {n_words + class_tokens} tokens, but the context length is "
        f"{context_length}; use a {init_key} of at most {context_length - class_tokens} tokens"
    )
