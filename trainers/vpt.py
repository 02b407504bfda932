"""Deep VPT on CLIP (Jia et al., ECCV 2022; the CLIP variant of MaPLe's repository): deep vision prompts only,
against a hand-written prompt per class ("a photo of a {}." for every dataset, as the public code), or with
N_CTX_TEXT > 0 a CoOp-style learned text context at the text tower's input."""
from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from yacs.config import CfgNode as CN

import clip
from dassl.config import ConfigError, register_cfg_extension
from dassl.engine import TRAINER_REGISTRY

from .base import PromptTrainer
from .class_prompts import ClassPrompts, zeroshot_text_features
from .deep_prompts import (
    PROMPT_INIT_STD,
    DeepPromptNet,
    IndependentPrompts,
    check_depth,
    check_prompts_fit,
    check_vision_backbone,
    text_context,
)

logger = logging.getLogger(__name__)


@register_cfg_extension
def add_vpt_config(cfg: CN) -> None:
    cfg.TRAINER.VPT = CN()
    cfg.TRAINER.VPT.N_CTX_VISION = 2
    cfg.TRAINER.VPT.PROMPT_DEPTH_VISION = 1  # blocks 0..J-1 get fresh vision prompts
    cfg.TRAINER.VPT.TEMPLATE = "a photo of a {}."  # the public code's, for every dataset; "" = the dataset's own
    cfg.TRAINER.VPT.N_CTX_TEXT = 0  # 0: the hand-written template; > 0: a learned text context (CoOp-style)
    cfg.TRAINER.VPT.CTX_INIT = ""  # init of the learned text context (N_CTX_TEXT > 0)
    cfg.TRAINER.VPT.PREC = "auto"  # auto (bf16 where fast, else fp32), fp32, fp16, amp, bf16


class VisionPromptsOnly(nn.Module):
    """Deep vision prompts V_0..V_{J-1} [n_v, d_v]; the text side has nothing to learn."""

    ctx = None

    def __init__(self, depth: int, n_tokens: int, width: int):
        super().__init__()
        self.vision = nn.Parameter(torch.empty(depth, n_tokens, width).normal_(0.0, PROMPT_INIT_STD))

    def text_deep_prompts(self) -> list[Tensor]:
        return []

    def vision_prompts(self) -> clip.VisionPrompts:
        return clip.VisionPrompts(self.vision[0], list(self.vision[1:].unbind(0)))


class VPTNet(DeepPromptNet):
    """Prompted image features against fixed class text features of a hand-written template, or, with a learned
    text context (``class_prompts`` given instead), against CoOp-style class prompts."""

    def __init__(
        self,
        clip_model,
        learner: nn.Module,
        class_prompts: ClassPrompts | None = None,
        fixed_text: Tensor | None = None,
    ):
        if (class_prompts is None) == (fixed_text is None):
            raise ValueError("VPTNet takes class prompts (a learned text context) or fixed text features, one of them")
        super().__init__(clip_model, learner, class_prompts)
        self.register_buffer("fixed_text", fixed_text, persistent=False)

    @classmethod
    def from_config(cls, cfg: CN, clip_model, classnames: Sequence[str], template: str | None) -> VPTNet:
        """``template``: the hand-written prompt of the fixed text (unused, may be None, with N_CTX_TEXT > 0)."""
        c = cfg.TRAINER.VPT
        check_vision_backbone(clip_model, "TRAINER.VPT.PROMPT_DEPTH_VISION", c.PROMPT_DEPTH_VISION)
        check_depth(c.PROMPT_DEPTH_VISION, clip_model.vision_layers, "TRAINER.VPT.PROMPT_DEPTH_VISION", "image")
        if c.N_CTX_VISION < 1:
            raise ConfigError(f"TRAINER.VPT.N_CTX_VISION is {c.N_CTX_VISION}; valid: >= 1")
        if c.N_CTX_TEXT > 0:
            ctx, prefix = text_context(clip_model, c.N_CTX_TEXT, c.CTX_INIT, "TRAINER.VPT.N_CTX_TEXT",
                                       "TRAINER.VPT.CTX_INIT")
            check_prompts_fit(prefix, classnames, clip_model.context_length, "TRAINER.VPT.N_CTX_TEXT",
                              c.N_CTX_TEXT, "TRAINER.VPT.CTX_INIT")
            learner = IndependentPrompts(ctx, 1, c.PROMPT_DEPTH_VISION, c.N_CTX_VISION, clip_model.vision_width)
            return cls(clip_model, learner, class_prompts=ClassPrompts(clip_model, classnames, ctx.shape[0],
                                                                       placeholder=prefix))
        if template is None:
            raise ValueError("VPTNet.from_config needs the hand-written template when TRAINER.VPT.N_CTX_TEXT is 0")
        logger.info("VPT text: the hand-written template %r", template)
        learner = VisionPromptsOnly(c.PROMPT_DEPTH_VISION, c.N_CTX_VISION, clip_model.vision_width)
        return cls(clip_model, learner, fixed_text=zeroshot_text_features(clip_model, classnames, template))

    def text_features(self) -> Tensor:
        return super().text_features() if self.fixed_text is None else self.fixed_text

    def step_work(self, batch_size: int) -> dict:
        work = super().step_work(batch_size)
        return work if self.fixed_text is None else {**work, "instances": 0}  # the class text features are fixed


@TRAINER_REGISTRY.register()
class VPT(PromptTrainer):
    """VPT trainer: cross-entropy; only the image tower runs with autograd (unless the text context learns)."""

    CFG_NODE = "VPT"

    def build_model(self) -> None:
        clip_model = self.load_backbone()
        template = None if self.method_cfg.N_CTX_TEXT > 0 else self.template()
        classnames = self.dm.dataset.classnames
        with self.autocast():  # fixed class text features are computed once, in the run's precision
            self.model = VPTNet.from_config(self.cfg, clip_model, classnames, template).to(self.device)
        self.register_learner(self.model.prompt_learner)
