"""The CLIP text tower from token embeddings, with deep prompts: causal SDPA, cut to the longest prompt, exact."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .blocks import attention_block, replace_rows
from .errors import UnsupportedBackboneError


def check_text_tower(text: nn.Module) -> None:
    """Raise for text towers that the fast path would not reproduce exactly."""
    pool_type = getattr(text, "text_pool_type", getattr(text, "pool_type", "argmax"))
    if pool_type != "argmax":
        raise UnsupportedBackboneError(
            f"Unsupported text pooling '{pool_type}'; supported: 'argmax' (EOT = largest token id)"
        )
    if getattr(text, "cls_emb", None) is not None:
        raise UnsupportedBackboneError("Unsupported text tower with a class token (embed_cls=True)")
    if getattr(text, "attn_mask", 0) is None:
        raise UnsupportedBackboneError("Unsupported text tower without a causal mask (no_causal_mask=True)")


def causal_block(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """One pre-norm residual block on [N, L, width] with causal SDPA attention."""
    return attention_block(block, x, causal=True)


def check_deep_prompts(deep_prompts: Sequence[torch.Tensor], rows: int, width: int, blocks: int) -> int:
    """The number of prompt tokens n of `deep_prompts` (0 if none), after checking depth and shapes."""
    if not deep_prompts:
        return 0
    if len(deep_prompts) + 1 > blocks:
        raise ValueError(
            f"text prompt depth {len(deep_prompts) + 1} ({len(deep_prompts)} deep_prompts) exceeds the text "
            f"tower's {blocks} blocks; valid depths: 1..{blocks} (0..{blocks - 1} deep_prompts)"
        )
    n_tokens = deep_prompts[0].shape[-2] if deep_prompts[0].dim() >= 2 else 0
    for layer, prompt in enumerate(deep_prompts, start=1):
        if prompt.shape not in ((n_tokens, width), (rows, n_tokens, width)) or n_tokens < 1:
            raise ValueError(
                f"deep_prompts[{layer - 1}] (block {layer}) has shape {list(prompt.shape)}; expected "
                f"[n, {width}] or [{rows}, n, {width}] with the same n >= 1 at every block "
                f"(n = {n_tokens} from deep_prompts[0])"
            )
    return n_tokens


def encode_from_embeddings(
    text: nn.Module,
    embeddings: torch.Tensor,
    eot_index: torch.Tensor,
    truncate: bool = True,
    checkpointing: bool = False,
    deep_prompts: Sequence[torch.Tensor] = (),
) -> torch.Tensor:
    """Text features [N, embed_dim] of token embeddings [N, L, width] read at `eot_index` [N].

    `text` holds the text pieces (transformer.resblocks, positional_embedding, ln_final, text_projection).
    `deep_prompts[i]` replaces positions 1..n of the residual stream before block i+1, without positional
    embedding; the tokens there after the last prompted block are kept (callers check shapes first). With
    `checkpointing` (and grad enabled) each block's activations are recomputed in backward instead of kept.
    """
    if truncate:
        # Causal attention: tokens after the last EOT never reach an EOT, so dropping them is exact; the deep
        # prompts' rows 1..n lie before every EOT (checked by the caller), so they are never cut.
        embeddings = embeddings[:, : int(eot_index.max()) + 1]
    length = embeddings.shape[1]
    x = embeddings + text.positional_embedding[:length].to(embeddings.dtype)
    recompute = checkpointing and torch.is_grad_enabled()
    for layer, block in enumerate(text.transformer.resblocks):
        if 1 <= layer <= len(deep_prompts):
            x = replace_rows(x, 1, deep_prompts[layer - 1])
        x = checkpoint(causal_block, block, x, use_reentrant=False) if recompute else causal_block(block, x)
    x = x[torch.arange(x.shape[0], device=x.device), eot_index]  # [N, width]
    x = text.ln_final(x)  # per-token norm: normalising only the EOT tokens is exact
    projection = text.text_projection
    if projection is None:
        return x
    return projection(x) if isinstance(projection, nn.Linear) else x @ projection
