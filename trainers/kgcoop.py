"""KgCoOp (Yao et al., CVPR 2023, arXiv 2303.13283): CoOp kept close to CLIP's hand-written class embeddings.

The loss is CoOp's cross-entropy plus W · (1 − mean_c cos(t_c, w_c)), where t_c are the learned prompts'
class text features and w_c those of the dataset's hand-written template, computed by the same frozen
backbone called without a learned prompt (the public code loads a second CLIP for them).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

from torch import Tensor
from yacs.config import CfgNode as CN

from dassl.config import ConfigError, register_cfg_extension
from dassl.engine import TRAINER_REGISTRY

from .base import PromptTrainer
from .checks import check_context_fits
from .class_prompts import ClassPrompts, init_context, zeroshot_text_features
from .coop import CoOpNet, CoOpPromptLearner
from .losses import classification_terms, cosine_logits

logger = logging.getLogger(__name__)

PENALTIES = ("cosine", "squared_l2")


@register_cfg_extension
def add_kgcoop_config(cfg: CN) -> None:
    cfg.TRAINER.KGCOOP = CN()
    cfg.TRAINER.KGCOOP.N_CTX = 4
    cfg.TRAINER.KGCOOP.CTX_INIT = "a photo of a"  # n_ctx becomes its token count when set
    cfg.TRAINER.KGCOOP.PREC = "auto"  # auto (bf16 where fast, else fp32), fp32, fp16, amp, bf16
    cfg.TRAINER.KGCOOP.W = 8.0  # weight of the knowledge-guided term (the public base-to-new value)
    # cosine = the public code's W·(1 − mean cos); squared_l2 = W·mean ||t − w||², the paper's form
    # (twice the cosine form for unit vectors).
    cfg.TRAINER.KGCOOP.PENALTY = "cosine"
    cfg.TRAINER.KGCOOP.TEMPLATE = ""  # "" = the dataset's own template, else e.g. "a photo of a {}."


def knowledge_distance(text: Tensor, zeroshot_text: Tensor, penalty: str = "cosine") -> Tensor:
    """Mean over classes of the distance between normalised learned [C, E] and hand-written [C, E] features."""
    text, zeroshot_text = text.float(), zeroshot_text.float()
    if penalty == "cosine":
        return 1.0 - (text * zeroshot_text).sum(dim=-1).mean()
    return (text - zeroshot_text).pow(2).sum(dim=-1).mean()


class KgCoOpNet(CoOpNet):
    """CoOp's logits; training adds the distance of its class text features to the hand-written ones."""

    def __init__(
        self,
        clip_model,
        prompt_learner: CoOpPromptLearner,
        class_prompts: ClassPrompts,
        classnames: Sequence[str],
        template: str,
        weight: float = 8.0,
        penalty: str = "cosine",
    ):
        super().__init__(clip_model, prompt_learner, class_prompts)
        self.classnames, self.template = list(classnames), template
        self.weight, self.penalty = weight, penalty
        self._zeroshot_text: Tensor | None = None

    @classmethod
    def from_config(cls, cfg: CN, clip_model, classnames: Sequence[str], template: str) -> KgCoOpNet:
        k = cfg.TRAINER.KGCOOP
        learner = CoOpPromptLearner(init_context(clip_model, k.N_CTX, k.CTX_INIT))
        check_context_fits(learner.n_ctx, classnames, clip_model.context_length, "TRAINER.KGCOOP.N_CTX",
                           k.CTX_INIT)
        prompts = ClassPrompts(clip_model, classnames, learner.n_ctx)
        return cls(clip_model, learner, prompts, classnames, template, k.W, k.PENALTY)

    @property
    def zeroshot_text(self) -> Tensor:
        """Hand-written class features [C, E]: the frozen backbone with no learned prompt, computed once."""
        if self._zeroshot_text is None:
            self._zeroshot_text = zeroshot_text_features(self.clip, self.classnames, self.template)
        return self._zeroshot_text

    def losses(self, images: dict[str, Tensor], labels: Tensor) -> dict[str, Tensor]:
        text = self.text_features()  # [C, E], one text-tower pass with grad
        logits = cosine_logits(self.clip.logit_scale, self.image_features(images["img"]), text)
        terms = classification_terms(logits, labels)
        terms["loss_kg"] = self.weight * knowledge_distance(text, self.zeroshot_text, self.penalty)
        return terms


@TRAINER_REGISTRY.register()
class KgCoOp(PromptTrainer):
    """KgCoOp trainer: CoOp's cross-entropy plus the knowledge-guided term."""

    CFG_NODE = "KGCOOP"

    def check_cfg(self, cfg: CN) -> None:
        k = cfg.TRAINER.KGCOOP
        if k.W < 0:
            raise ConfigError(f"TRAINER.KGCOOP.W is {k.W}; it must be >= 0")
        if k.PENALTY not in PENALTIES:
            raise ConfigError(
                f"TRAINER.KGCOOP.PENALTY is {k.PENALTY!r}; valid values: {', '.join(PENALTIES)}"
            )

    def build_model(self) -> None:
        clip_model = self.load_backbone()
        template = self.template()
        logger.info("KgCoOp hand-written template: %r", template)
        classnames = self.dm.dataset.classnames
        self.model = KgCoOpNet.from_config(self.cfg, clip_model, classnames, template).to(self.device)
        self.register_learner(self.model.prompt_learner)
