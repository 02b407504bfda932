"""The CLIP text tower from token embeddings: causal SDPA, cut to the longest prompt, exact."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from open_clip.transformer import ResidualAttentionBlock
from torch import nn
from torch.utils.checkpoint import checkpoint


def check_text_tower(text: nn.Module) -> None:
    """Raise for text towers that the fast path would not reproduce exactly."""
    pool_type = getattr(text, "text_pool_type", getattr(text, "pool_type", "argmax"))
    if pool_type != "argmax":
        raise ValueError(f"Unsupported text pooling '{pool_type}'; supported: 'argmax' (EOT = largest token id)")
    if getattr(text, "cls_emb", None) is not None:
        raise ValueError("Unsupported text tower with a class token (embed_cls=True)")
    if getattr(text, "attn_mask", 0) is None:
        raise ValueError("Unsupported text tower without a causal mask (no_causal_mask=True)")
    if not all(isinstance(b, ResidualAttentionBlock) for b in text.transformer.resblocks):
        raise ValueError("Unsupported text blocks: only open_clip's standard ResidualAttentionBlock is supported")


def causal_block(block: ResidualAttentionBlock, x: torch.Tensor) -> torch.Tensor:
    """One pre-norm residual block on [N, L, width], reusing its weights with causal SDPA attention."""
    attn = block.attn
    n, length, width = x.shape
    heads = attn.num_heads
    qkv = F.linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias)  # [N, L, 3*width]
    q, k, v = qkv.view(n, length, 3, heads, width // heads).permute(2, 0, 3, 1, 4)  # each [N, heads, L, hd]
    out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    out = out.transpose(1, 2).reshape(n, length, width)
    x = x + block.ls_1(F.linear(out, attn.out_proj.weight, attn.out_proj.bias))
    return x + block.ls_2(block.mlp(block.ln_2(x)))


def encode_from_embeddings(
    text: nn.Module,
    embeddings: torch.Tensor,
    eot_index: torch.Tensor,
    truncate: bool = True,
    checkpointing: bool = False,
) -> torch.Tensor:
    """Text features [N, embed_dim] of token embeddings [N, L, width] read at `eot_index` [N].

    `text` holds open_clip's text pieces (transformer, positional_embedding, ln_final, text_projection).
    With `checkpointing` (and grad enabled) each block's activations are recomputed in backward instead of
    kept, so memory no longer grows with the blocks' internals times the number of prompts.
    """
    if truncate:
        # Causal attention: tokens after the last EOT never reach an EOT, so dropping them is exact.
        embeddings = embeddings[:, : int(eot_index.max()) + 1]
    length = embeddings.shape[1]
    x = embeddings + text.positional_embedding[:length].to(embeddings.dtype)
    recompute = checkpointing and torch.is_grad_enabled()
    for block in text.transformer.resblocks:
        x = checkpoint(causal_block, block, x, use_reentrant=False) if recompute else causal_block(block, x)
    x = x[torch.arange(x.shape[0], device=x.device), eot_index]  # [N, width]
    x = text.ln_final(x)  # per-token norm: normalising only the EOT tokens is exact
    projection = text.text_projection
    if projection is None:
        return x
    return projection(x) if isinstance(projection, nn.Linear) else x @ projection
