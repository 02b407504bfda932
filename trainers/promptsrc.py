"""PromptSRC (Khattak et al., ICCV 2023, arXiv 2307.06948): IVLP prompts regulated by the frozen CLIP itself:
L1 agreement of text and image features and KL agreement of logits with the unprompted backbone, textual
diversity (the text targets average 60 templates), and a Gaussian-weighted average of the prompts over epochs."""
from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from yacs.config import CfgNode as CN

import clip
from dassl.config import ConfigError, register_cfg_extension
from dassl.engine import TRAINER_REGISTRY

from .base import PromptTrainer
from .class_prompts import ClassPrompts
from .deep_prompts import DeepPromptNet, IndependentPrompts, build_independent_prompts
from .losses import classification_terms, cosine_logits

logger = logging.getLogger(__name__)

KL_REDUCTIONS = ("numel", "batchmean")

# CLIP's ImageNet templates as the public PromptSRC uses them: 60 of the 80, "a photo of a {}." first.
PROMPTSRC_TEMPLATES = (
    "a photo of a {}.", "a bad photo of a {}.", "a photo of many {}.", "a sculpture of a {}.",
    "a photo of the hard to see {}.", "a low resolution photo of the {}.", "a rendering of a {}.",
    "graffiti of a {}.", "a bad photo of the {}.", "a cropped photo of the {}.", "a tattoo of a {}.",
    "the embroidered {}.", "a photo of a hard to see {}.", "a bright photo of a {}.", "a photo of a clean {}.",
    "a photo of a dirty {}.", "a dark photo of the {}.", "a drawing of a {}.", "a photo of my {}.",
    "the plastic {}.", "a photo of the cool {}.", "a close-up photo of a {}.", "a black and white photo of the {}.",
    "a painting of the {}.", "a painting of a {}.", "a pixelated photo of the {}.", "a sculpture of the {}.",
    "a bright photo of the {}.", "a cropped photo of a {}.", "a plastic {}.", "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.", "a blurry photo of the {}.", "a photo of the {}.",
    "a good photo of the {}.", "a rendering of the {}.", "a {} in a video game.", "a photo of one {}.",
    "a doodle of a {}.", "a close-up photo of the {}.", "the origami {}.", "the {} in a video game.",
    "a sketch of a {}.", "a doodle of the {}.", "a origami {}.", "a low resolution photo of a {}.",
    "the toy {}.", "a rendition of the {}.", "a photo of the clean {}.", "a photo of a large {}.",
    "a rendition of a {}.", "a photo of a nice {}.", "a photo of a weird {}.", "a blurry photo of a {}.",
    "a cartoon {}.", "art of a {}.", "a sketch of the {}.", "a embroidered {}.", "a pixelated photo of a {}.",
    "itap of the {}.",
)


@register_cfg_extension
def add_promptsrc_config(cfg: CN) -> None:
    cfg.TRAINER.PROMPTSRC = CN()
    cfg.TRAINER.PROMPTSRC.N_CTX_TEXT = 4
    cfg.TRAINER.PROMPTSRC.N_CTX_VISION = 4
    cfg.TRAINER.PROMPTSRC.CTX_INIT = "a photo of a"
    cfg.TRAINER.PROMPTSRC.PROMPT_DEPTH_TEXT = 9
    cfg.TRAINER.PROMPTSRC.PROMPT_DEPTH_VISION = 9
    cfg.TRAINER.PROMPTSRC.TEXT_LOSS_WEIGHT = 25.0  # lambda_t of the text-feature L1 agreement
    cfg.TRAINER.PROMPTSRC.IMAGE_LOSS_WEIGHT = 10.0  # lambda_i of the image-feature L1 agreement
    cfg.TRAINER.PROMPTSRC.KL_WEIGHT = 1.0  # the public code has no weight (1)
    # The public code divides the summed KL by B*C ("numel"); "batchmean" divides by B (a per-sample KL).
    cfg.TRAINER.PROMPTSRC.KL_REDUCTION = "numel"
    cfg.TRAINER.PROMPTSRC.GPA_MEAN = 15.0  # Gaussian prompt aggregation over epochs 1..MAX_EPOCH
    cfg.TRAINER.PROMPTSRC.GPA_STD = 1.0
    cfg.TRAINER.PROMPTSRC.PREC = "auto"  # auto (bf16 where fast, else fp32), fp32, fp16, amp, bf16


def gaussian_epoch_weights(max_epoch: int, mean: float, std: float) -> list[float]:
    """GPA weights w_1..w_E: the Gaussian pdf at each (1-based) epoch, normalised to sum to one."""
    density = [math.exp(-0.5 * ((epoch - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi))
               for epoch in range(1, max_epoch + 1)]
    total = sum(density)
    return [d / total for d in density]


def feature_agreement(student: Tensor, teacher: Tensor, weight: float) -> Tensor:
    """weight x the mean absolute difference of (normalised) features, per element as the public code."""
    return weight * F.l1_loss(student.float(), teacher.float(), reduction="mean")


def logit_agreement(student_logits: Tensor, teacher_logits: Tensor, reduction: str) -> Tensor:
    """KL(teacher || student) of the softmaxed logits, summed and divided by B*C ("numel") or B ("batchmean")."""
    kl = F.kl_div(F.log_softmax(student_logits.float(), dim=1), F.log_softmax(teacher_logits.float(), dim=1),
                  reduction="sum", log_target=True)
    return kl / (student_logits.numel() if reduction == "numel" else student_logits.shape[0])


class AggregatedPrompts(IndependentPrompts):
    """IVLP prompts plus their Gaussian-weighted running average (fp32 buffers, so a resume keeps it)."""

    def __init__(self, *args, epoch_weights: Sequence[float], **kwargs):
        super().__init__(*args, **kwargs)
        self.epoch_weights = list(epoch_weights)
        for name, param in list(self.named_parameters()):
            self.register_buffer(f"gpa_{name}", torch.zeros_like(param, dtype=torch.float32))

    @torch.no_grad()
    def accumulate(self, epoch: int) -> None:
        """Add w_epoch x the prompts after (1-based) ``epoch``."""
        for name, param in self.named_parameters():
            getattr(self, f"gpa_{name}").add_(param.float(), alpha=self.epoch_weights[epoch - 1])

    @torch.no_grad()
    def use_average(self) -> None:
        for name, param in self.named_parameters():
            param.copy_(getattr(self, f"gpa_{name}"))


class PromptSRCNet(DeepPromptNet):
    """IVLP's model; its training losses add the agreement with the unprompted backbone (the teacher)."""

    def __init__(
        self,
        clip_model,
        learner: AggregatedPrompts,
        class_prompts: ClassPrompts,
        classnames: Sequence[str],
        text_weight: float = 25.0,
        image_weight: float = 10.0,
        kl_weight: float = 1.0,
        kl_reduction: str = "numel",
    ):
        super().__init__(clip_model, learner, class_prompts)
        self.classnames = list(classnames)
        self.text_weight, self.image_weight = text_weight, image_weight
        self.kl_weight, self.kl_reduction = kl_weight, kl_reduction
        self._teacher_text: Tensor | None = None  # built at the first training step: evaluation never needs it

    @classmethod
    def from_config(cls, cfg: CN, clip_model, classnames: Sequence[str]) -> PromptSRCNet:
        c = cfg.TRAINER.PROMPTSRC
        weights = gaussian_epoch_weights(cfg.OPTIM.MAX_EPOCH, c.GPA_MEAN, c.GPA_STD)
        learner, class_prompts = build_independent_prompts(
            clip_model, c, "TRAINER.PROMPTSRC", classnames, learner_cls=AggregatedPrompts, epoch_weights=weights
        )
        return cls(
            clip_model,
            learner,
            class_prompts,
            classnames,
            text_weight=c.TEXT_LOSS_WEIGHT,
            image_weight=c.IMAGE_LOSS_WEIGHT,
            kl_weight=c.KL_WEIGHT,
            kl_reduction=c.KL_REDUCTION,
        )

    @torch.no_grad()
    def teacher_text_features(self) -> Tensor:
        """Normalised mean over the 60 templates of the frozen text features (unnormalised before the mean)."""
        if self._teacher_text is None:
            device = self.clip.logit_scale.device
            total = None
            for template in PROMPTSRC_TEMPLATES:
                texts = [template.format(name.replace("_", " ")) for name in self.classnames]
                tokens = clip.tokenize(texts, context_length=self.clip.context_length).to(device)
                features = self.clip.encode_text(tokens).float()
                total = features if total is None else total + features
            self._teacher_text = F.normalize(total / len(PROMPTSRC_TEMPLATES), dim=-1)
        return self._teacher_text

    def step_work(self, batch_size: int) -> dict:
        # The teacher's image pass is a step's work; its text targets are computed once per run.
        return {**super().step_work(batch_size), "teacher_views": ("img",)}

    def losses(self, images: dict[str, Tensor], labels: Tensor) -> dict[str, Tensor]:
        image = self.image_features(images["img"])
        text = self.text_features()
        logits = cosine_logits(self.clip.logit_scale, image, text)
        with torch.no_grad():  # the teacher: the same backbone without prompts, on the same augmented images
            teacher_image = F.normalize(self.clip.encode_image(images["img"]).float(), dim=-1)
            teacher_text = self.teacher_text_features()
            teacher_logits = cosine_logits(self.clip.logit_scale, teacher_image, teacher_text)
        terms = classification_terms(logits, labels)
        terms["loss_text"] = feature_agreement(text, teacher_text, self.text_weight)
        terms["loss_image"] = feature_agreement(image, teacher_image, self.image_weight)
        terms["loss_kl"] = self.kl_weight * logit_agreement(logits, teacher_logits, self.kl_reduction)
        return terms


@TRAINER_REGISTRY.register()
class PromptSRC(PromptTrainer):
    """PromptSRC trainer: the four losses; after each epoch the prompts join their Gaussian-weighted average,
    which replaces them after the last epoch (so the final checkpoint and test use it)."""

    CFG_NODE = "PROMPTSRC"

    def check_cfg(self, cfg) -> None:
        super().check_cfg(cfg)
        c, epochs = cfg.TRAINER.PROMPTSRC, cfg.OPTIM.MAX_EPOCH
        if not 1 <= c.GPA_MEAN <= epochs:
            raise ConfigError(
                f"TRAINER.PROMPTSRC.GPA_MEAN is {c.GPA_MEAN}; valid: 1..{epochs} (OPTIM.MAX_EPOCH)"
            )
        if not c.GPA_STD > 0:
            raise ConfigError(f"TRAINER.PROMPTSRC.GPA_STD is {c.GPA_STD}; valid: > 0")
        if c.KL_REDUCTION not in KL_REDUCTIONS:
            raise ConfigError(
                f"TRAINER.PROMPTSRC.KL_REDUCTION is {c.KL_REDUCTION!r}; valid: {', '.join(KL_REDUCTIONS)}"
            )

    def build_model(self) -> None:
        clip_model = self.load_backbone()
        self.model = PromptSRCNet.from_config(self.cfg, clip_model, self.dm.dataset.classnames).to(self.device)
        self.register_learner(self.model.prompt_learner)

    def after_epoch(self) -> None:
        learner = self.model.prompt_learner
        learner.accumulate(self.epoch + 1)
        if self.epoch + 1 == self.max_epoch:
            learner.use_average()
            logger.info("PromptSRC: the prompts are now their Gaussian-weighted average over the epochs")
        super().after_epoch()
