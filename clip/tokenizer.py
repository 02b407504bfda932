"""CLIP's byte-pair tokenizer (open_clip's SimpleTokenizer) with OpenAI's start/end tokens and padding."""
from __future__ import annotations

import logging
from functools import lru_cache

import torch
from open_clip.tokenizer import SimpleTokenizer

logger = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def _tokenizer() -> SimpleTokenizer:
    return SimpleTokenizer()


def tokenize(texts: str | list[str], context_length: int = 77) -> torch.LongTensor:
    """Token ids [N, context_length]: SOT, the text's BPE tokens, EOT, then zeros.

    A text longer than the context is truncated with its last position set to EOT, as OpenAI's
    `truncate=True`; a warning says how many were cut, and callers that must not cut check lengths first.
    """
    if isinstance(texts, str):
        texts = [texts]
    if not all(isinstance(t, str) for t in texts):
        raise TypeError(f"tokenize expects a string or a list of strings, got {[type(t).__name__ for t in texts]}")
    if context_length < 2:
        raise ValueError(f"context_length must be at least 2 (SOT and EOT), got {context_length}")
    tokenizer = _tokenizer()
    ids = torch.zeros(len(texts), context_length, dtype=torch.long)
    truncated = 0
    for row, text in enumerate(texts):
        tokens = [tokenizer.sot_token_id, *tokenizer.encode(text), tokenizer.eot_token_id]
        if len(tokens) > context_length:
            tokens = tokens[: context_length - 1] + [tokenizer.eot_token_id]
            truncated += 1
        ids[row, : len(tokens)] = torch.tensor(tokens)
    if truncated:
        logger.warning("%d of %d texts exceed %d tokens and were truncated (EOT kept)", truncated, len(texts),
                       context_length)
    return ids
