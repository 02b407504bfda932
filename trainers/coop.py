"""CoOp (Zhou et al., IJCV 2022, arXiv 2109.01134): a learned context shared by (or specific to) classes."""
from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from yacs.config import CfgNode as CN

from dassl.config import register_cfg_extension
from dassl.engine import TRAINER_REGISTRY

from .base import PromptModel, PromptTrainer
from .checks import check_context_fits
from .class_prompts import ClassPrompts, init_context
from .losses import classification_terms, cosine_logits

logger = logging.getLogger(__name__)


@register_cfg_extension
def add_coop_config(cfg: CN) -> None:
    cfg.TRAINER.COOP = CN()
    cfg.TRAINER.COOP.N_CTX = 16
    cfg.TRAINER.COOP.CSC = False  # class-specific context
    cfg.TRAINER.COOP.CTX_INIT = ""
    cfg.TRAINER.COOP.PREC = "auto"  # auto (bf16 where fast, else fp32), fp32, fp16, amp, bf16
    cfg.TRAINER.COOP.CLASS_TOKEN_POSITION = "end"  # end, middle, front


class CoOpPromptLearner(nn.Module):
    """The learned context: [n_ctx, D] shared by all classes, or [n_cls, n_ctx, D] class-specific."""

    def __init__(self, ctx: Tensor):
        super().__init__()
        self.ctx = nn.Parameter(ctx)

    @classmethod
    def from_config(cls, cfg: CN, clip_model, n_cls: int) -> CoOpPromptLearner:
        c = cfg.TRAINER.COOP
        return cls(init_context(clip_model, c.N_CTX, c.CTX_INIT, n_cls=n_cls if c.CSC else None))

    @property
    def n_ctx(self) -> int:
        return self.ctx.shape[-2]


class CoOpNet(PromptModel):
    """Logits of a frozen CLIP against the class prompts built from the learned context."""

    def __init__(self, clip_model, prompt_learner: CoOpPromptLearner, class_prompts: ClassPrompts):
        super().__init__()
        self.clip = clip_model
        self.prompt_learner = prompt_learner
        self.class_prompts = class_prompts
        self._eval_text: tuple[int, Tensor] | None = None  # (ctx version, class features) for evaluation

    @classmethod
    def from_config(cls, cfg: CN, clip_model, classnames: Sequence[str]) -> CoOpNet:
        c = cfg.TRAINER.COOP
        learner = CoOpPromptLearner.from_config(cfg, clip_model, len(classnames))
        check_context_fits(learner.n_ctx, classnames, clip_model.context_length, "TRAINER.COOP.N_CTX",
                           c.CTX_INIT)
        prompts = ClassPrompts(clip_model, classnames, learner.n_ctx, position=c.CLASS_TOKEN_POSITION)
        return cls(clip_model, learner, prompts)

    def losses(self, images: dict[str, Tensor], labels: Tensor) -> dict[str, Tensor]:
        return classification_terms(self.logits(images["img"]), labels)

    def logits(self, images: Tensor) -> Tensor:
        """Class logits [B, n_cls]; all classes' prompts go through the text tower once."""
        return cosine_logits(self.clip.logit_scale, self.image_features(images), self.text_features())

    @torch.no_grad()
    def image_features(self, images: Tensor) -> Tensor:
        """Normalised fp32 features [B, E] of the frozen image tower."""
        return F.normalize(self.clip.encode_image(images).float(), dim=-1)

    def text_features(self) -> Tensor:
        """Class text features [n_cls, E]; without grad they depend on ctx alone, so they are reused."""
        ctx = self.prompt_learner.ctx
        if torch.is_grad_enabled():
            self._eval_text = None
            return self.class_prompts.class_features(self.clip, ctx)
        # ctx._version counts in-place updates (optimizer steps, load_state_dict), so a stale cache is never used.
        if self._eval_text is None or self._eval_text[0] != ctx._version:
            self._eval_text = (ctx._version, self.class_prompts.class_features(self.clip, ctx))
        return self._eval_text[1]


@TRAINER_REGISTRY.register()
class CoOp(PromptTrainer):
    """CoOp trainer: cross-entropy on the class logits."""

    CFG_NODE = "COOP"

    def build_model(self) -> None:
        clip_model = self.load_backbone()
        self.model = CoOpNet.from_config(self.cfg, clip_model, self.dm.dataset.classnames).to(self.device)
        self.register_learner(self.model.prompt_learner)
