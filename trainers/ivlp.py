"""IVLP (independent vision-language prompting; the baseline of MaPLe, CVPR 2023, and PromptSRC, ICCV 2023):
deep prompts learned independently in the text and image towers, trained with cross-entropy only.
With PROMPT_DEPTH_VISION 0 it is Deep Language Prompting (text prompts only, frozen image tower)."""
from __future__ import annotations

from collections.abc import Sequence

from yacs.config import CfgNode as CN

from dassl.config import register_cfg_extension
from dassl.engine import TRAINER_REGISTRY

from .base import PromptTrainer
from .deep_prompts import DeepPromptNet, build_independent_prompts


@register_cfg_extension
def add_ivlp_config(cfg: CN) -> None:
    cfg.TRAINER.IVLP = CN()
    cfg.TRAINER.IVLP.N_CTX_TEXT = 2
    cfg.TRAINER.IVLP.N_CTX_VISION = 2
    cfg.TRAINER.IVLP.CTX_INIT = "a photo of a"
    cfg.TRAINER.IVLP.PROMPT_DEPTH_TEXT = 9  # blocks 0..J-1 get fresh text prompts
    cfg.TRAINER.IVLP.PROMPT_DEPTH_VISION = 9  # 0: no vision prompts (Deep Language Prompting)
    cfg.TRAINER.IVLP.PREC = "auto"  # auto (bf16 where fast, else fp32), fp32, fp16, amp, bf16


class IVLPNet(DeepPromptNet):
    """Independent deep prompts in both towers; cross-entropy on the class logits."""

    @classmethod
    def from_config(cls, cfg: CN, clip_model, classnames: Sequence[str]) -> IVLPNet:
        learner, class_prompts = build_independent_prompts(clip_model, cfg.TRAINER.IVLP, "TRAINER.IVLP", classnames)
        return cls(clip_model, learner, class_prompts)


@TRAINER_REGISTRY.register()
class IVLP(PromptTrainer):
    """IVLP trainer: cross-entropy on the class logits of the doubly prompted CLIP."""

    CFG_NODE = "IVLP"

    def build_model(self) -> None:
        clip_model = self.load_backbone()
        self.model = IVLPNet.from_config(self.cfg, clip_model, self.dm.dataset.classnames).to(self.device)
        self.register_learner(self.model.prompt_learner)
