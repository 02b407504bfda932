"""The text-tower pass over (instance, class) prompts of image-conditioned methods, bounded by a memory budget.

A method whose prompts depend on the image (CoCoOp, GOPro) runs the text tower over instances x classes
prompts. It opts into this module by sending those prompts through an ``InstanceTextPass``: with no budget
(``TRAIN.MEMORY_BUDGET_GB`` unset) that is one pass, as before; with a budget, the training pass is split
into chunks whose size is computed from the shapes, and every chunk but the last is checkpointed (its
activations are recomputed in backward), so only one chunk's activations are alive at a time. Losses and
gradients are the same as the single pass; evaluation chunks take the budget into account as well.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from dassl.config import register_cfg_extension
from dassl.utils import ConfigError

from .class_prompts import ClassPrompts, encode_prompt_embeddings

__all__ = [
    "add_memory_budget_config",
    "check_memory_budget",
    "check_eval_prompt_chunk",
    "GIB",
    "SAVED_WIDTHS_PER_TOKEN_LAYER",
    "EVAL_WIDTHS_PER_TOKEN",
    "HEADROOM",
    "TextChunkPlan",
    "plan_text_chunks",
    "InstanceTextPass",
    "uses_text_chunking",
    "warn_if_memory_budget_unused",
]

logger = logging.getLogger(__name__)

GIB = 2**30
# What autograd keeps per token per text block, in block widths at the residual stream's element size:
# ln_1 in/out, q, k, v, the attention output and its reshaped copy, the residual, ln_2 in/out (~10) and
# the MLP's 4x-wide fc output and activation (QuickGELU keeps two more). Measured on open_clip blocks
# with saved-tensor hooks: 14.2 widths (fp32); tests/test_memory_budget.py checks this bound.
SAVED_WIDTHS_PER_TOKEN_LAYER = 16
# A no-grad pass keeps only the block being computed: the residual, q/k/v, attention output and the
# 4x-wide MLP hidden, in block widths per token.
EVAL_WIDTHS_PER_TOKEN = 12
# Part of the budget left for what these shapes do not see: the interpreter and libraries, allocator
# slack, the image tower's outputs and the rest of the step.
HEADROOM = 0.15
# Per prompt kept outside the chunks, in embed-dim fp32 values: features, normalised features, their grad.
KEPT_FEATURE_COPIES = 3


def check_memory_budget(budget) -> None:
    """``TRAIN.MEMORY_BUDGET_GB`` must be None (no limit) or a number of GiB > 0."""
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, float)) or budget <= 0):
        raise ConfigError(f"TRAIN.MEMORY_BUDGET_GB is {budget!r}; valid: a number of GiB > 0, or None (no limit)")


@register_cfg_extension(
    run_local_keys=("TRAIN.MEMORY_BUDGET_GB",),
    check=lambda cfg: check_memory_budget(cfg.TRAIN.get("MEMORY_BUDGET_GB", None)),
)
def add_memory_budget_config(cfg) -> None:
    # GiB that a step of an image-conditioned method (CoCoOp, GOPro) may use; None = no limit. When set, the
    # text tower runs its (image, class) prompts in checkpointed chunks sized to fit; same losses and gradients.
    cfg.TRAIN.MEMORY_BUDGET_GB = None


def check_eval_prompt_chunk(value: int, key: str) -> None:
    """An ``EVAL_PROMPT_CHUNK`` (prompts per evaluation pass of the text tower) must be >= 1."""
    if value < 1:
        raise ConfigError(f"{key} is {value!r}; valid: >= 1 ((image, class) prompts per evaluation text pass)")


@dataclass(frozen=True)
class TextChunkPlan:
    """How a training text pass of ``n_prompts`` is run: ``chunk`` prompts at a time (all: one pass)."""

    n_prompts: int
    chunk: int
    bytes_per_prompt: int  # activations autograd keeps for one prompt through the whole tower
    available_bytes: int  # budget left for the text activations

    @property
    def n_chunks(self) -> int:
        return math.ceil(self.n_prompts / self.chunk)

    @property
    def chunked(self) -> bool:
        return self.chunk < self.n_prompts


def tower_bytes(module: nn.Module) -> int:
    """Bytes of a module's parameters and buffers."""
    tensors = list(module.parameters()) + list(module.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


def plan_text_chunks(
    n_prompts: int,
    n_tokens: int,
    width: int,
    layers: int,
    element_size: int,
    embed_dim: int,
    budget_bytes: int,
    resident_bytes: int,
) -> TextChunkPlan:
    """Prompts per checkpointed chunk so that one chunk's activations fit the budget, from the shapes alone.

    budget x (1 - HEADROOM) - resident weights - the per-prompt features kept for the loss is what one
    chunk's activations (tokens x width x layers x element size x SAVED_WIDTHS_PER_TOKEN_LAYER per prompt)
    may take. Raises when not even one prompt fits, naming the budget that would.
    """
    per_prompt = n_tokens * width * layers * element_size * SAVED_WIDTHS_PER_TOKEN_LAYER
    kept = n_prompts * embed_dim * 4 * KEPT_FEATURE_COPIES
    available = int(budget_bytes * (1 - HEADROOM)) - resident_bytes - kept
    if available < per_prompt:
        needed = (resident_bytes + kept + per_prompt) / (1 - HEADROOM) / GIB
        raise ConfigError(
            f"TRAIN.MEMORY_BUDGET_GB {budget_bytes / GIB:g} is too small for the text tower "
            f"({resident_bytes / GIB:.2f} GiB of weights, {n_prompts} prompts x {n_tokens} tokens); "
            f"it needs at least {math.ceil(needed * 10) / 10:g}"
        )
    return TextChunkPlan(n_prompts, min(n_prompts, available // per_prompt), per_prompt, available)


class InstanceTextPass:
    """Text features of per-instance contexts against every class, in chunks under ``memory_budget_gb``.

    ``memory_budget_gb`` None = no limit: training runs one pass (today's behaviour) and evaluation runs
    ``eval_chunk`` (image, class) prompts at a time; with a budget both are bounded by it as well.
    """

    def __init__(self, memory_budget_gb: float | None = None, eval_chunk: int = 1024):
        check_memory_budget(memory_budget_gb)
        check_eval_prompt_chunk(eval_chunk, "EVAL_PROMPT_CHUNK")
        self.budget_bytes = None if memory_budget_gb is None else int(memory_budget_gb * GIB)
        self.eval_chunk = eval_chunk
        self._logged: set[tuple[int, int]] = set()

    def plan(self, clip_model, n_prompts: int, n_tokens: int) -> TextChunkPlan | None:
        """The chunking of a training pass over ``n_prompts`` x ``n_tokens`` (None without a budget)."""
        if self.budget_bytes is None:
            return None
        plan = plan_text_chunks(
            n_prompts,
            n_tokens,
            clip_model.text_width,
            len(clip_model.transformer.resblocks),
            clip_model.dtype.itemsize,
            clip_model.embed_dim,
            self.budget_bytes,
            tower_bytes(clip_model),
        )
        if (n_prompts, n_tokens) not in self._logged:
            self._logged.add((n_prompts, n_tokens))
            logger.info(
                "TRAIN.MEMORY_BUDGET_GB %g: text pass over %d prompts x %d tokens in %d chunk(s) of %d "
                "(%.1f MiB of activations per prompt, %.2f GiB available for them)",
                self.budget_bytes / GIB, n_prompts, n_tokens, plan.n_chunks, plan.chunk,
                plan.bytes_per_prompt / 2**20, plan.available_bytes / GIB,
            )
        return plan

    def features(self, clip_model, class_prompts: ClassPrompts, ctx: Tensor) -> Tensor:
        """Normalised text features [M, n_cls, E] for per-instance contexts [M, n_ctx, D]."""
        m, n_cls = ctx.shape[0], class_prompts.n_cls
        n = m * n_cls
        plan = self.plan(clip_model, n, class_prompts.tokens.shape[1]) if torch.is_grad_enabled() else None
        if plan is None or not plan.chunked:
            return class_prompts.instance_features(clip_model, ctx)

        # Every chunk is cut to the length of the whole pass (not its own longest prompt), so each prompt
        # goes through the same shapes of operations as in one pass and the results match it.
        length = int(class_prompts.tokens.argmax(dim=-1).max()) + 1

        def chunk_features(ctx: Tensor, start: int, stop: int) -> Tensor:
            pair = torch.arange(start, stop, device=ctx.device)
            embeddings, tokens = class_prompts.embed(ctx[pair // n_cls], pair % n_cls)
            return encode_prompt_embeddings(clip_model, embeddings[:, :length], tokens[:, :length], truncate=False)

        # The last chunk keeps its activations: autograd runs the latest nodes first, so its backward frees
        # them before any earlier chunk is recomputed, and one chunk is still all that is alive. The remainder
        # goes first, so that only the smallest chunk and the other full ones are recomputed.
        bounds = [0, *range(n % plan.chunk or plan.chunk, n + 1, plan.chunk)]
        # Only this pass's own recomputation: a per-block checkpoint inside each chunk would recompute twice.
        per_block, clip_model.text_checkpointing = clip_model.text_checkpointing, False
        try:
            parts = [checkpoint(chunk_features, ctx, start, stop, use_reentrant=False)
                     for start, stop in zip(bounds[:-2], bounds[1:-1])]
            parts.append(chunk_features(ctx, bounds[-2], bounds[-1]))
        finally:
            clip_model.text_checkpointing = per_block
        return torch.cat(parts).view(m, n_cls, -1)

    def eval_chunk_for(self, clip_model, n_tokens: int) -> int:
        """(image, class) prompts per no-grad pass: ``eval_chunk``, fewer when the budget asks for it."""
        if self.budget_bytes is None:
            return self.eval_chunk
        per_prompt = n_tokens * clip_model.text_width * clip_model.dtype.itemsize * EVAL_WIDTHS_PER_TOKEN
        available = int(self.budget_bytes * (1 - HEADROOM)) - tower_bytes(clip_model)
        return max(1, min(self.eval_chunk, available // per_prompt))

    def logits(
        self, clip_model, class_prompts: ClassPrompts, image_features: Tensor, ctx: Tensor, logit_scale: Tensor
    ) -> Tensor:
        """Evaluation logits [B, n_cls] of image features [B, E] against their own contexts [B, n_ctx, D]."""
        chunk = self.eval_chunk_for(clip_model, class_prompts.tokens.shape[1])
        return class_prompts.instance_logits(clip_model, image_features, ctx, logit_scale, chunk)


def uses_text_chunking(model: nn.Module) -> bool:
    """Whether a submodule of ``model`` sends its text pass through an ``InstanceTextPass`` (it reads the budget)."""
    return any(
        isinstance(value, InstanceTextPass) for module in model.modules() for value in vars(module).values()
    )


def warn_if_memory_budget_unused(cfg, model: nn.Module) -> None:
    """Say once that ``TRAIN.MEMORY_BUDGET_GB`` has no effect when the built model never chunks its text pass."""
    budget = cfg.TRAIN.get("MEMORY_BUDGET_GB", None)
    if budget is not None and not uses_text_chunking(model):
        logger.warning(
            f"WARNING: TRAIN.MEMORY_BUDGET_GB is {budget:g} but {cfg.TRAINER.NAME} runs no chunked text pass (only "
            "trainers whose prompts depend on the image do), so the budget has no effect"
        )
