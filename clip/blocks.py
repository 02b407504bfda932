"""Transformer blocks under OpenAI CLIP's interface: sequence-first [L, N, width], the mask applied inside.

open_clip's blocks are batch-first and take the causal mask as an argument; code written against OpenAI CLIP
feeds [L, N, width] (L = the context length in the text tower) and relies on the mask each text block stores;
other layouts fail there, and these modules refuse them too. They hold open_clip's block weights under
OpenAI's names (so state-dict keys are unchanged) and behave as OpenAI's; `attention_block` is the one
batch-first function that every tower's block loop in `clip/` runs.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from open_clip.transformer import ResidualAttentionBlock
from torch import nn

_PORTING_HINT = (
    "MaPLe/PromptSRC-fork code passes [x, prompts, counter] to its own modified CLIP; here deep prompts go "
    "through CLIPBackbone.encode_prompts(..., deep_prompts=...) and encode_image(..., prompts=VisionPrompts(...))"
)


def attention_block(block: nn.Module, x: torch.Tensor, causal: bool) -> torch.Tensor:
    """One pre-norm residual block on batch-first [N, L, width], with SDPA attention (causal or full)."""
    attn = block.attn
    n, length, width = x.shape
    heads = attn.num_heads
    qkv = F.linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias)  # [N, L, 3*width]
    q, k, v = qkv.view(n, length, 3, heads, width // heads).permute(2, 0, 3, 1, 4)  # each [N, heads, L, hd]
    out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    out = out.transpose(1, 2).reshape(n, length, width)
    x = x + block.ls_1(F.linear(out, attn.out_proj.weight, attn.out_proj.bias))
    return x + block.ls_2(block.mlp(block.ln_2(x)))


def replace_rows(x: torch.Tensor, start: int, prompt: torch.Tensor) -> torch.Tensor:
    """`x` [N, L, width] with rows start..start+n replaced by `prompt` ([n, width] shared or [N, n, width])."""
    n_tokens = prompt.shape[-2]
    prompt = prompt.to(x.dtype).expand(x.shape[0], n_tokens, x.shape[2])
    return torch.cat([x[:, :start], prompt, x[:, start + n_tokens:]], dim=1)


def causal_mask(length: int, device: torch.device | None = None) -> torch.Tensor:
    """OpenAI's additive causal mask [length, length]: -inf strictly above the diagonal, 0 elsewhere."""
    return torch.full((length, length), float("-inf"), device=device).triu_(1)


class Block(nn.Module):
    """An open_clip block's weights behaving as OpenAI's `ResidualAttentionBlock`: [L, N, width] in and out."""

    def __init__(self, block: ResidualAttentionBlock, causal: bool, context_length: int | None = None) -> None:
        super().__init__()
        if not isinstance(block, ResidualAttentionBlock) or hasattr(block, "ln_1_kv"):
            raise ValueError(
                f"Unsupported transformer block {type(block).__name__}: only open_clip's standard "
                "self-attention ResidualAttentionBlock is supported"
            )
        self.ln_1, self.ls_1 = block.ln_1, block.ls_1
        self.ln_2, self.mlp, self.ls_2 = block.ln_2, block.mlp, block.ls_2
        # OpenAI's MultiheadAttention is sequence-first, so callers of `attn` get that layout. A shallow copy
        # shares the weights and leaves the open_clip model we were built from working as it did.
        self.attn = copy.copy(block.attn)
        self.attn.batch_first = False
        self.causal = causal
        self.context_length = context_length

    @property
    def attn_mask(self) -> torch.Tensor | None:
        """The mask OpenAI's block stores: causal [T, T] in the text tower, None in the image tower."""
        if not self.causal:
            return None
        return causal_mask(self.context_length, self.ln_1.weight.device)

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        _check_sequence_first(x, args, kwargs, "block")
        if self.causal:
            _check_text_layout(x, self.context_length, "text block")
        return attention_block(self, x.transpose(0, 1), self.causal).transpose(0, 1)


class SequenceFirstTransformer(nn.Module):
    """A tower's blocks as OpenAI's `Transformer`: `forward(x [L, N, width]) -> [L, N, width]`, mask inside."""

    def __init__(self, resblocks: nn.ModuleList, causal: bool, context_length: int | None = None) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList(Block(b, causal, context_length) for b in resblocks)
        self.width = self.resblocks[0].ln_1.weight.shape[0]
        self.layers = len(self.resblocks)
        self.causal = causal
        self.context_length = context_length

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        _check_sequence_first(x, args, kwargs, "transformer")
        if self.causal:
            _check_text_layout(x, self.context_length, "text transformer")
        x = x.transpose(0, 1)  # [N, L, width]
        for block in self.resblocks:
            x = attention_block(block, x, self.causal)
        return x.transpose(0, 1)


def _check_text_layout(x: torch.Tensor, context_length: int | None, what: str) -> None:
    """Fail where OpenAI's text tower fails, on its fixed [T, T] causal mask, and on batch-first prompts.

    OpenAI's text blocks attend with the stored mask, so any length other than the context length T raises
    there; [N, T, width] prompts with N = T pass that test. They are told apart by the start-of-text token every
    CLIP prompt begins with: sequence-first, x[0] repeats one vector over the batch; batch-first, x[:, 0] does.
    """
    if context_length is None:
        return
    fix = ("CoOp's TextEncoder permutes its [N, L, width] prompts with x.permute(1, 0, 2) before and after "
           "transformer(x); or encode them with CLIPBackbone.encode_prompts")
    if x.shape[0] != context_length:
        raise ValueError(
            f"{what} input has shape {list(x.shape)}; OpenAI's text tower takes sequence-first "
            f"[{context_length}, N, width] (its causal mask is {context_length}x{context_length}): {fix}"
        )
    if x.shape[1] > 1 and not _rows_equal(x[0]) and _rows_equal(x[:, 0]):
        raise ValueError(
            f"{what} input [{context_length}, {x.shape[1]}, {x.shape[2]}] is batch-first: every row of x[:, 0], "
            f"not of x[0], holds the same start-of-text token; OpenAI's text tower takes sequence-first "
            f"[{context_length}, N, width]: {fix}"
        )


def _rows_equal(rows: torch.Tensor) -> bool:
    """Whether every row of `rows` [M, width] equals the first."""
    return bool((rows == rows[:1]).all())


def _check_sequence_first(x: object, args: tuple, kwargs: dict, what: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{what} takes one tensor [L, N, width] (OpenAI layout), got {type(x).__name__}. "
                        f"{_PORTING_HINT}")
    if args or kwargs:
        raise TypeError(
            f"{what} takes only x [L, N, width] (OpenAI layout); it applies its own mask, got extra arguments "
            f"{len(args)} positional, {sorted(kwargs)} keyword. {_PORTING_HINT}"
        )
    if x.dim() != 3:
        raise ValueError(f"{what} input has shape {list(x.shape)}; expected [L, N, width] (OpenAI layout)")
