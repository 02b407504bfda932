"""MaPLe (Khattak et al., CVPR 2023, arXiv 2210.03117): deep text prompts whose vision prompts are derived from
them by learned linear couplings, one per depth, so both towers are prompted jointly."""
from __future__ import annotations

import copy
from collections.abc import Sequence

from torch import Tensor, nn
from yacs.config import CfgNode as CN

import clip
from dassl.config import register_cfg_extension
from dassl.engine import TRAINER_REGISTRY

from .base import PromptTrainer
from .class_prompts import ClassPrompts
from .deep_prompts import (
    PROMPT_INIT_STD,
    DeepPromptNet,
    check_depth,
    check_prompts_fit,
    check_vision_backbone,
    text_context,
)


@register_cfg_extension
def add_maple_config(cfg: CN) -> None:
    cfg.TRAINER.MAPLE = CN()
    cfg.TRAINER.MAPLE.N_CTX = 2
    cfg.TRAINER.MAPLE.CTX_INIT = "a photo of a"
    cfg.TRAINER.MAPLE.PROMPT_DEPTH = 9  # blocks 0..J-1 of both towers get fresh prompts
    # The public code deep-copies one Linear for every deep coupling, so they all start identical; True
    # initialises each independently.
    cfg.TRAINER.MAPLE.INDEPENDENT_COUPLING_INIT = False
    cfg.TRAINER.MAPLE.PREC = "auto"  # auto (bf16 where fast, else fp32), fp32, fp16, amp, bf16


class CoupledPrompts(nn.Module):
    """Text C_0 [n, d_t] (the context) and C_1..C_{J-1}; vision V_l = F_l(C_l), F_l: Linear d_t -> d_v."""

    def __init__(self, ctx: Tensor, depth: int, vision_width: int, independent_init: bool = False):
        super().__init__()
        n_ctx, text_width = ctx.shape
        self.ctx = nn.Parameter(ctx)
        self.proj = nn.Linear(text_width, vision_width)  # F_0, applied to the context itself
        self.deep_text = nn.Parameter(ctx.new_empty(depth - 1, n_ctx, text_width).normal_(0.0, PROMPT_INIT_STD))
        if independent_init:
            self.deep_proj = nn.ModuleList(nn.Linear(text_width, vision_width) for _ in range(depth - 1))
        else:
            first = nn.Linear(text_width, vision_width)
            self.deep_proj = nn.ModuleList(copy.deepcopy(first) for _ in range(depth - 1))

    def text_deep_prompts(self) -> list[Tensor]:
        return list(self.deep_text.unbind(0))

    def vision_prompts(self) -> clip.VisionPrompts:
        deep = [coupling(prompt) for coupling, prompt in zip(self.deep_proj, self.deep_text.unbind(0))]
        return clip.VisionPrompts(self.proj(self.ctx), deep)


class MaPLeNet(DeepPromptNet):
    """CLIP with coupled prompts: gradients reach the text prompts through both towers."""

    @classmethod
    def from_config(cls, cfg: CN, clip_model, classnames: Sequence[str]) -> MaPLeNet:
        c = cfg.TRAINER.MAPLE
        check_vision_backbone(clip_model, "TRAINER.MAPLE.PROMPT_DEPTH", c.PROMPT_DEPTH)
        blocks = min(clip_model.text_layers, clip_model.vision_layers)
        check_depth(c.PROMPT_DEPTH, blocks, "TRAINER.MAPLE.PROMPT_DEPTH", "shallower")
        ctx, prefix = text_context(clip_model, c.N_CTX, c.CTX_INIT, "TRAINER.MAPLE.N_CTX", "TRAINER.MAPLE.CTX_INIT")
        check_prompts_fit(prefix, classnames, clip_model.context_length, "TRAINER.MAPLE.N_CTX", c.N_CTX,
                          "TRAINER.MAPLE.CTX_INIT")
        learner = CoupledPrompts(ctx, c.PROMPT_DEPTH, clip_model.vision_width, c.INDEPENDENT_COUPLING_INIT)
        return cls(clip_model, learner, ClassPrompts(clip_model, classnames, ctx.shape[0], placeholder=prefix))


@TRAINER_REGISTRY.register()
class MaPLe(PromptTrainer):
    """MaPLe trainer: cross-entropy on the class logits of the jointly prompted CLIP."""

    CFG_NODE = "MAPLE"

    def build_model(self) -> None:
        clip_model = self.load_backbone()
        self.model = MaPLeNet.from_config(self.cfg, clip_model, self.dm.dataset.classnames).to(self.device)
        self.register_learner(self.model.prompt_learner)
