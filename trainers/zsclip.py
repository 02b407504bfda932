"""Zero-shot CLIP (Radford et al., 2021): hand-written prompt per class, nothing learned."""
from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from yacs.config import CfgNode as CN

from dassl.config import ConfigError, register_cfg_extension
from dassl.engine import TRAINER_REGISTRY

from .base import PromptModel, PromptTrainer
from .class_prompts import zeroshot_text_features
from .losses import cosine_logits

logger = logging.getLogger(__name__)


@register_cfg_extension
def add_zsclip_config(cfg: CN) -> None:
    cfg.TRAINER.ZSCLIP = CN()
    cfg.TRAINER.ZSCLIP.PREC = "auto"  # auto (bf16 where fast, else fp32), fp32, fp16, amp, bf16
    cfg.TRAINER.ZSCLIP.TEMPLATE = ""  # "" = the dataset's own template, else e.g. "a photo of a {}."


class ZeroshotClassifier(PromptModel):
    """A frozen CLIP and the normalised text features of one prompt per class (evaluation only)."""

    def __init__(self, clip_model, classnames: Sequence[str], template: str):
        super().__init__()
        if "{}" not in template:
            raise ConfigError(f"TRAINER.ZSCLIP.TEMPLATE {template!r} has no '{{}}' for the class name")
        self.clip = clip_model
        self.register_buffer("text_features", zeroshot_text_features(clip_model, classnames, template), persistent=False)

    @classmethod
    def from_config(cls, cfg: CN, clip_model, classnames: Sequence[str], template: str) -> ZeroshotClassifier:
        """The same entry point as every method's model; only the template (already resolved) shapes it."""
        return cls(clip_model, classnames, template)

    @torch.no_grad()
    def logits(self, images: Tensor) -> Tensor:
        features = F.normalize(self.clip.encode_image(images).float(), dim=-1)
        return cosine_logits(self.clip.logit_scale, features, self.text_features)


@TRAINER_REGISTRY.register()
class ZeroshotCLIP(PromptTrainer):
    """Evaluation-only trainer: registers no model, so nothing is trained or saved."""

    CFG_NODE = "ZSCLIP"
    EVAL_ONLY = True

    def build_model(self) -> None:
        clip_model = self.load_backbone()
        template = self.template()
        logger.info("Zero-shot prompt template: %r", template)
        classnames = self.dm.dataset.classnames
        with self.autocast():  # the class text features are computed once, in the run's precision
            self.model = ZeroshotClassifier.from_config(self.cfg, clip_model, classnames, template).to(self.device)
