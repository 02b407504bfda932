"""Shared pieces of the deep-prompt methods (IVLP, VPT, MaPLe, PromptSRC): the text context as the public code
initialises it, config checks, independent prompts for both towers, and the model each method's own model
extends, which runs a learner's prompts through the backbone's prompt hooks (``encode_prompts(deep_prompts=)``,
``encode_image(prompts=)``).

A learner is any module with ``ctx`` ([n, d_t] shallow text context, or None), ``text_deep_prompts()``
(list of [n, d_t], blocks 1..J_t-1) and ``vision_prompts()`` (``clip.VisionPrompts`` or None).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import clip
from dassl.utils import ConfigError

from .base import PromptModel
from .checks import context_init_too_long
from .class_prompts import CTX_PLACEHOLDER, MIN_NON_CONTEXT_TOKENS, ClassPrompts, token_counts
from .losses import classification_terms, cosine_logits

__all__ = [
    "DeepPromptNet",
    "IndependentPrompts",
    "build_independent_prompts",
    "check_depth",
    "check_prompts_fit",
    "check_vision_backbone",
    "text_context",
]

logger = logging.getLogger(__name__)

PROMPT_INIT_STD = 0.02  # N(0, 0.02^2) for every prompt not initialised from words
MAX_WORD_INIT = 4  # the public code initialises from CTX_INIT only when N_CTX <= 4


def check_depth(depth: int, blocks: int, key: str, tower: str, minimum: int = 1) -> None:
    """A prompt depth must lie in minimum..blocks of its tower."""
    if not minimum <= depth <= blocks:
        raise ConfigError(
            f"{key} is {depth}; valid: {minimum}..{blocks} (the {tower} tower has {blocks} blocks)"
        )


def check_vision_backbone(clip_model, key: str, value: int) -> None:
    """Vision prompts exist only for ViT image towers that pool their class token."""
    if clip_model.visual_kind != "vit":
        raise ConfigError(
            f"{key} is {value} but vision prompts need a ViT backbone and this one is a {clip_model.visual_kind}; "
            f"set {key} 0 or MODEL.BACKBONE.NAME to a ViT (e.g. ViT-B/16)"
        )
    pooling = getattr(clip_model.visual, "pool_type", "tok")
    if pooling != "tok":
        raise ConfigError(
            f"{key} is {value} but vision prompts need a ViT that pools its class token and this one pools with "
            f"{pooling!r}; set {key} 0 or MODEL.BACKBONE.NAME to an OpenAI-style ViT (e.g. ViT-B/16)"
        )


def check_prompts_fit(prefix: str, classnames: Sequence[str], context_length: int, n_ctx_key: str, n_ctx: int,
                      init_key: str) -> None:
    """Every prompt "<prefix> <classname>." must fit the text context (else its EOT would be cut).

    The error names the key that made the prefix: ``init_key`` when it is CTX_INIT's words, ``n_ctx_key``
    when it is the n_ctx placeholders of a random context.
    """
    counts = token_counts([f"{prefix} {name.replace('_', ' ')}." for name in classnames])
    longest = max(range(len(counts)), key=counts.__getitem__)
    if counts[longest] <= context_length:
        return
    class_tokens = token_counts([f"{classnames[longest].replace('_', ' ')}."])[0]  # with SOS and EOT
    if prefix != placeholder_text(n_ctx):
        n_words = token_counts([prefix])[0] - 2
        raise ConfigError(context_init_too_long(init_key, prefix, n_words, classnames[longest], class_tokens,
                                                context_length))
    raise ConfigError(
        f"{n_ctx_key} {n_ctx}: the prompt for class {classnames[longest]!r} needs {counts[longest]} tokens but the "
        f"context length is {context_length}; use {n_ctx_key} <= {context_length - class_tokens}"
    )


def placeholder_text(n_ctx: int) -> str:
    """The prompt text a random context of ``n_ctx`` vectors stands on."""
    return " ".join([CTX_PLACEHOLDER] * n_ctx)


def text_context(clip_model, n_ctx: int, ctx_init: str, n_ctx_key: str, init_key: str) -> tuple[Tensor, str]:
    """(initial text context [n_ctx, d_t], the prompt text before the class name), as the public code does.

    With ``ctx_init`` and ``n_ctx`` <= 4: the embeddings of its first n_ctx tokens, and the prompt keeps the
    whole ``ctx_init`` text, so words after the first n_ctx stay frozen ("a photo of a" with n_ctx 2 learns
    "a photo"). Otherwise N(0, 0.02^2) and n_ctx placeholders.
    """
    if n_ctx < 1:
        raise ConfigError(f"{n_ctx_key} is {n_ctx}; valid: >= 1")
    words = ctx_init.replace("_", " ").strip()
    if words and n_ctx <= MAX_WORD_INIT:
        n_tokens = token_counts([words])[0] - 2  # without SOS and EOT
        limit = clip_model.context_length - MIN_NON_CONTEXT_TOKENS
        if n_tokens > limit:  # checked before tokenising at the context length, which would cut it
            shown = words if len(words) <= 60 else words[:57] + "..."
            raise ConfigError(
                f"{init_key} {shown!r} has {n_tokens} tokens, but a prompt holds {clip_model.context_length} "
                f"tokens and SOS, EOT, the class name and '.' take at least {MIN_NON_CONTEXT_TOKENS}: use a "
                f"{init_key} of at most {limit} tokens, fewer by the longest class name"
            )
        ids = clip.tokenize([words], context_length=clip_model.context_length)
        if n_tokens < n_ctx:
            raise ConfigError(
                f"{init_key} {words!r} has {n_tokens} tokens, fewer than {n_ctx_key} {n_ctx}; "
                f"use a longer {init_key} or {n_ctx_key} <= {n_tokens}"
            )
        if n_tokens > n_ctx:
            logger.info("Context init %r: the first %d of %d tokens are learned, the rest stay frozen words",
                        words, n_ctx, n_tokens)
        with torch.no_grad():
            embeddings = clip_model.token_embedding(ids.to(clip_model.logit_scale.device))[0, 1 : 1 + n_ctx]
        return embeddings.float().clone(), words
    return torch.empty(n_ctx, clip_model.text_width).normal_(0.0, PROMPT_INIT_STD), placeholder_text(n_ctx)


def _normal(*shape: int) -> nn.Parameter:
    return nn.Parameter(torch.empty(*shape).normal_(0.0, PROMPT_INIT_STD))


class IndependentPrompts(nn.Module):
    """Independent deep prompts in both towers (IVLP): text C_0 [n_t, d_t] (the context), C_1..C_{J_t-1},
    and vision V_0..V_{J_v-1} [n_v, d_v] (none when J_v = 0)."""

    def __init__(self, ctx: Tensor, text_depth: int, vision_depth: int = 0, n_vision: int = 0, vision_width: int = 0):
        super().__init__()
        n_text, text_width = ctx.shape
        self.ctx = nn.Parameter(ctx)
        self.deep_text = _normal(text_depth - 1, n_text, text_width)  # [J_t - 1, n_t, d_t]
        self.vision = _normal(vision_depth, n_vision, vision_width) if vision_depth else None  # [J_v, n_v, d_v]

    def text_deep_prompts(self) -> list[Tensor]:
        return list(self.deep_text.unbind(0))

    def vision_prompts(self) -> clip.VisionPrompts | None:
        if self.vision is None:
            return None
        return clip.VisionPrompts(self.vision[0], list(self.vision[1:].unbind(0)))


def build_independent_prompts(
    clip_model, c, node: str, classnames: Sequence[str], learner_cls: type[IndependentPrompts] = IndependentPrompts,
    **learner_kwargs,
) -> tuple[IndependentPrompts, ClassPrompts]:
    """(learner, class prompts) from a config node with IVLP's keys (N_CTX_TEXT, N_CTX_VISION, CTX_INIT,
    PROMPT_DEPTH_TEXT, PROMPT_DEPTH_VISION), each checked against the backbone first."""
    check_depth(c.PROMPT_DEPTH_TEXT, clip_model.text_layers, f"{node}.PROMPT_DEPTH_TEXT", "text")
    if c.PROMPT_DEPTH_VISION:
        check_vision_backbone(clip_model, f"{node}.PROMPT_DEPTH_VISION", c.PROMPT_DEPTH_VISION)
        check_depth(c.PROMPT_DEPTH_VISION, clip_model.vision_layers, f"{node}.PROMPT_DEPTH_VISION", "image")
        if c.N_CTX_VISION < 1:
            raise ConfigError(
                f"{node}.N_CTX_VISION is {c.N_CTX_VISION}; valid: >= 1 when PROMPT_DEPTH_VISION > 0"
            )
    ctx, prefix = text_context(clip_model, c.N_CTX_TEXT, c.CTX_INIT, f"{node}.N_CTX_TEXT", f"{node}.CTX_INIT")
    check_prompts_fit(prefix, classnames, clip_model.context_length, f"{node}.N_CTX_TEXT", c.N_CTX_TEXT,
                      f"{node}.CTX_INIT")
    vision_width = clip_model.vision_width if c.PROMPT_DEPTH_VISION else 0
    learner = learner_cls(ctx, c.PROMPT_DEPTH_TEXT, c.PROMPT_DEPTH_VISION, c.N_CTX_VISION, vision_width,
                          **learner_kwargs)
    return learner, ClassPrompts(clip_model, classnames, ctx.shape[0], placeholder=prefix)


class DeepPromptNet(PromptModel):
    """CLIP logits with a learner's prompts in both towers; class prompts "<prefix> <classname>."."""

    def __init__(self, clip_model, learner: nn.Module, class_prompts: ClassPrompts):
        super().__init__()
        self.clip = clip_model
        self.prompt_learner = learner
        self.class_prompts = class_prompts
        self._eval_text: tuple[tuple[int, ...], Tensor] | None = None  # (parameter versions, class features)

    def losses(self, images: dict[str, Tensor], labels: Tensor) -> dict[str, Tensor]:
        return classification_terms(self.logits(images["img"]), labels)

    def logits(self, images: Tensor) -> Tensor:
        return cosine_logits(self.clip.logit_scale, self.image_features(images), self.text_features())

    def learned_prompts(self) -> tuple[list[Tensor], clip.VisionPrompts | None]:
        return self.prompt_learner.text_deep_prompts(), self.prompt_learner.vision_prompts()

    def image_features(self, images: Tensor) -> Tensor:
        """Normalised fp32 image features [B, E]; the image tower runs with autograd only under vision prompts."""
        prompts = self.prompt_learner.vision_prompts()
        with torch.set_grad_enabled(torch.is_grad_enabled() and prompts is not None):
            return F.normalize(self.clip.encode_image(images, prompts).float(), dim=-1)

    def text_features(self) -> Tensor:
        """Normalised fp32 class text features [n_cls, E]; without grad they are reused until a parameter moves."""
        if torch.is_grad_enabled():
            self._eval_text = None
            return self.prompted_text_features()
        # _version counts in-place updates (optimizer steps, load_state_dict): a stale cache is never used.
        versions = tuple(p._version for p in self.prompt_learner.parameters())
        if self._eval_text is None or self._eval_text[0] != versions:
            self._eval_text = (versions, self.prompted_text_features())
        return self._eval_text[1]

    def prompted_text_features(self) -> Tensor:
        prompts = self.class_prompts
        class_idx = torch.arange(prompts.n_cls, device=prompts.tokens.device)
        ctx = self.prompt_learner.ctx.unsqueeze(0).expand(prompts.n_cls, -1, -1)
        embeddings, tokens = prompts.embed(ctx, class_idx)
        features = self.clip.encode_prompts(
            embeddings.to(self.clip.dtype), tokens, deep_prompts=self.prompt_learner.text_deep_prompts()
        )
        return F.normalize(features.float(), dim=-1)
