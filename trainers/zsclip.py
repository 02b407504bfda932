"""Zero-shot CLIP (Radford et al., 2021): hand-written prompt per class, nothing learned."""
from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from yacs.config import CfgNode as CN

import clip
from dassl.config import register_cfg_extension
from dassl.engine import TRAINER_REGISTRY

from .prompting import PromptTrainer, cosine_logits, zeroshot_template

logger = logging.getLogger(__name__)

TEXT_CHUNK = 256  # class prompts per text-tower pass when building the classifier


@register_cfg_extension
def add_zsclip_config(cfg: CN) -> None:
    cfg.TRAINER.ZSCLIP = CN()
    cfg.TRAINER.ZSCLIP.PREC = "bf16"  # fp32, fp16, amp, bf16; CPU runs fp32
    cfg.TRAINER.ZSCLIP.TEMPLATE = ""  # "" = the dataset's own template, else e.g. "a photo of a {}."


class ZeroshotClassifier(nn.Module):
    """A frozen CLIP and the normalised text features of one prompt per class."""

    def __init__(self, clip_model, classnames: Sequence[str], template: str):
        super().__init__()
        if "{}" not in template:
            raise ValueError(f"TRAINER.ZSCLIP.TEMPLATE {template!r} has no '{{}}' for the class name")
        self.clip = clip_model
        prompts = [template.format(name.replace("_", " ")) for name in classnames]
        tokens = clip.tokenize(prompts, context_length=clip_model.context_length)
        tokens = tokens.to(clip_model.logit_scale.device)
        with torch.no_grad():
            weights = torch.cat([clip_model.encode_text(chunk) for chunk in tokens.split(TEXT_CHUNK)])
        self.register_buffer("text_features", F.normalize(weights.float(), dim=-1), persistent=False)

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        features = F.normalize(self.clip.encode_image(images).float(), dim=-1)
        return cosine_logits(self.clip.logit_scale, features, self.text_features)


@TRAINER_REGISTRY.register()
class ZeroshotCLIP(PromptTrainer):
    """Evaluation-only trainer: registers no model, so nothing is trained or saved."""

    CFG_NODE = "ZSCLIP"

    def build_model(self) -> None:
        clip_model = self.load_backbone()
        cfg = self.cfg
        template = cfg.TRAINER.ZSCLIP.TEMPLATE or zeroshot_template(cfg.DATASET.NAME)
        logger.info("Zero-shot prompt template: %r", template)
        with self.autocast():
            self.model = ZeroshotClassifier(clip_model, self.dm.dataset.classnames, template)
