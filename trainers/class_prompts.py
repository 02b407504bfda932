"""Class-name prompts "{ctx} {classname}." for one class set, context initialisation and text encoding."""
from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import clip
from dassl.utils import ConfigError

__all__ = [
    "CLASS_TOKEN_POSITIONS",
    "ClassPrompts",
    "init_context",
    "encode_prompt_embeddings",
    "token_counts",
    "zeroshot_text_features",
]

logger = logging.getLogger(__name__)

CLASS_TOKEN_POSITIONS = ("end", "middle", "front")
# Tokens a prompt needs besides its context: SOS, EOT, and at least one class-name token and ".".
MIN_NON_CONTEXT_TOKENS = 4
CTX_PLACEHOLDER = "X"  # one BPE token per word; stands in for each learned context vector


def token_counts(texts: Sequence[str]) -> list[int]:
    """Number of tokens of each text, SOS and EOT included (tokenised with room to spare)."""
    ids = clip.tokenize(list(texts), context_length=1024)
    return (ids.argmax(dim=-1) + 1).tolist()


def init_context(clip_model, n_ctx: int, ctx_init: str, n_cls: int | None = None) -> Tensor:
    """Initial context vectors: the embeddings of ``ctx_init`` words, else N(0, 0.02).

    With ``ctx_init`` the number of context vectors is its token count (``n_ctx`` is ignored, as upstream
    CoOp does; a different ``n_ctx`` is warned about once); ``n_cls`` gives one context per class
    (class-specific context) instead of a shared one.
    """
    ctx_init = ctx_init.replace("_", " ").strip()
    if ctx_init:
        n_words = token_counts([ctx_init])[0] - 2  # without SOS and EOT
        limit = clip_model.context_length - MIN_NON_CONTEXT_TOKENS
        if n_words > limit:
            shown = ctx_init if len(ctx_init) <= 60 else ctx_init[:57] + "..."
            raise ConfigError(
                f"CTX_INIT {shown!r} has {n_words} tokens, but a prompt holds {clip_model.context_length} tokens "
                f"and SOS, EOT, the class name and '.' take at least {MIN_NON_CONTEXT_TOKENS}: use a CTX_INIT of at "
                f"most {limit} tokens, fewer by the longest class name (with CTX_INIT set, its tokens are the "
                "context; N_CTX is not used)"
            )
        if n_words != n_ctx:
            logger.warning(
                f"WARNING: N_CTX is {n_ctx} but CTX_INIT {ctx_init!r} has {n_words} tokens: {n_words} context "
                f"vectors are learned, initialised from its words (as upstream CoOp does); config.yaml keeps "
                f"N_CTX {n_ctx}, run.json records the learned shape"
            )
        ids = clip.tokenize([ctx_init], context_length=clip_model.context_length)
        with torch.no_grad():
            emb = clip_model.token_embedding(ids.to(clip_model.logit_scale.device))[0, 1 : 1 + n_words]
        ctx = emb.float().clone()
        if n_cls is not None:
            ctx = ctx.unsqueeze(0).repeat(n_cls, 1, 1)
        return ctx
    if n_ctx < 1:
        raise ConfigError(f"N_CTX is {n_ctx}; it must be >= 1 when CTX_INIT is empty")
    shape = (n_ctx, clip_model.text_width) if n_cls is None else (n_cls, n_ctx, clip_model.text_width)
    return torch.empty(shape).normal_(0.0, 0.02)


def encode_prompt_embeddings(clip_model, embeddings: Tensor, tokens: Tensor, truncate: bool = True) -> Tensor:
    """L2-normalised fp32 text features of prompt embeddings [N, L, D] with token ids [N, L]."""
    features = clip_model.encode_prompts(embeddings.to(clip_model.dtype), tokens, truncate=truncate)
    return F.normalize(features.float(), dim=-1)


@torch.no_grad()
def zeroshot_text_features(clip_model, classnames: Sequence[str], template: str, chunk: int = 256) -> Tensor:
    """L2-normalised fp32 features [n_cls, E] of ``template`` filled with each class name (no learned prompt).

    The frozen backbone itself, called without prompts: the teacher KgCoOp-style methods need, no second CLIP.
    """
    prompts = [template.format(name.replace("_", " ")) for name in classnames]
    tokens = clip.tokenize(prompts, context_length=clip_model.context_length).to(clip_model.logit_scale.device)
    features = torch.cat([clip_model.encode_text(part) for part in tokens.split(chunk)])
    return F.normalize(features.float(), dim=-1)


class ClassPrompts(nn.Module):
    """Frozen token pieces of the prompt "{ctx} {classname}." for one class set.

    prefix = SOS embedding, suffix = class name, ".", EOT (cut after the longest EOT unless ``cut=False``).
    Both are non-persistent buffers: they depend on the class set, not on training.
    """

    def __init__(
        self, clip_model, classnames: Sequence[str], n_ctx: int, position: str = "end", cut: bool = True,
        placeholder: str | None = None,
    ):
        """``placeholder``: the text before the class name whose first n_ctx tokens the context replaces
        (default: n_ctx "X"s); its later tokens stay frozen words (MaPLe's "a photo of a" with n_ctx 2)."""
        super().__init__()
        if position not in CLASS_TOKEN_POSITIONS:
            raise ConfigError(
                f"CLASS_TOKEN_POSITION is {position!r}; valid: {', '.join(CLASS_TOKEN_POSITIONS)}"
            )
        if placeholder is not None and position != "end":
            raise ValueError(f"a placeholder text needs CLASS_TOKEN_POSITION 'end', got {position!r}")
        names = [name.replace("_", " ") for name in classnames]
        placeholder = placeholder or " ".join([CTX_PLACEHOLDER] * n_ctx)
        tokens = clip.tokenize([f"{placeholder} {name}." for name in names], context_length=clip_model.context_length)
        if cut:  # the text tower is causal: tokens after the last EOT never change the output
            tokens = tokens[:, : int(tokens.argmax(dim=-1).max()) + 1]
        device = clip_model.logit_scale.device
        tokens = tokens.to(device)
        with torch.no_grad():
            embeddings = clip_model.token_embedding(tokens).float()
        self.n_ctx = n_ctx
        self.n_cls = len(names)
        self.register_buffer("tokens", tokens, persistent=False)
        self.register_buffer("prefix", embeddings[:, :1], persistent=False)
        self.register_buffer("suffix", embeddings[:, 1 + n_ctx :], persistent=False)
        order = None
        if position != "end":
            name_lens = [n - 2 for n in token_counts(names)]  # without SOS/EOT
            order = self._token_order(name_lens, n_ctx, tokens.shape[1], position).to(device)
        self.register_buffer("order", order, persistent=False)

    @staticmethod
    def _token_order(name_lens: list[int], n_ctx: int, length: int, position: str) -> Tensor:
        """Per class, the source position of each output token, moving the class name to front/middle."""
        rows = []
        half = n_ctx // 2
        for k in name_lens:
            ctx = list(range(1, 1 + n_ctx))
            name = list(range(1 + n_ctx, 1 + n_ctx + k))
            rest = list(range(1 + n_ctx + k, length))
            body = name + ctx if position == "front" else ctx[:half] + name + ctx[half:]
            rows.append([0] + body + rest)
        return torch.tensor(rows, dtype=torch.long)

    def embed(self, ctx: Tensor, class_idx: Tensor) -> tuple[Tensor, Tensor]:
        """Prompt embeddings [N, L, D] and token ids [N, L] for per-prompt contexts ctx [N, n_ctx, D]."""
        embeddings = torch.cat([self.prefix[class_idx], ctx.to(self.prefix.dtype), self.suffix[class_idx]], dim=1)
        tokens = self.tokens[class_idx]
        if self.order is not None:
            order = self.order[class_idx]
            embeddings = embeddings.gather(1, order.unsqueeze(-1).expand_as(embeddings))
            tokens = tokens.gather(1, order)
        return embeddings, tokens

    def class_features(self, clip_model, ctx: Tensor) -> Tensor:
        """Text features [n_cls, E] for one shared context [n_ctx, D] or class-specific [n_cls, n_ctx, D]."""
        if ctx.dim() == 2:
            ctx = ctx.unsqueeze(0).expand(self.n_cls, -1, -1)
        class_idx = torch.arange(self.n_cls, device=self.tokens.device)
        return encode_prompt_embeddings(clip_model, *self.embed(ctx, class_idx))

    def instance_features(self, clip_model, ctx: Tensor) -> Tensor:
        """Text features [M, n_cls, E] for per-instance contexts [M, n_ctx, D], in one text-tower pass."""
        m = ctx.shape[0]
        ctx = ctx.unsqueeze(1).expand(-1, self.n_cls, -1, -1).reshape(m * self.n_cls, *ctx.shape[1:])
        class_idx = torch.arange(self.n_cls, device=self.tokens.device).repeat(m)
        features = encode_prompt_embeddings(clip_model, *self.embed(ctx, class_idx))
        return features.view(m, self.n_cls, -1)

    def instance_logits(
        self, clip_model, image_features: Tensor, ctx: Tensor, logit_scale: Tensor, chunk: int
    ) -> Tensor:
        """Logits [B, n_cls] of normalised image features [B, E] against their own contexts [B, n_ctx, D].

        (image, class) pairs go through the text tower ``chunk`` at a time, so memory stays bounded.
        """
        b = image_features.shape[0]
        device = image_features.device
        logits = image_features.new_empty(b * self.n_cls)
        for start in range(0, b * self.n_cls, chunk):
            pair = torch.arange(start, min(start + chunk, b * self.n_cls), device=device)
            image_idx, class_idx = pair // self.n_cls, pair % self.n_cls
            text = encode_prompt_embeddings(clip_model, *self.embed(ctx[image_idx], class_idx))
            logits[pair] = (image_features[image_idx] * text).sum(-1)
        return logit_scale * logits.view(b, self.n_cls)
