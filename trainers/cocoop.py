"""CoCoOp (Zhou et al., CVPR 2022, arXiv 2203.05557): context conditioned on each image by a meta-net."""
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
from .chunking import InstanceTextPass, check_eval_prompt_chunk
from .class_prompts import ClassPrompts, init_context
from .losses import classification_terms, cosine_logits

logger = logging.getLogger(__name__)


@register_cfg_extension(run_local_keys=("TRAINER.COCOOP.TEXT_CHECKPOINTING", "TRAINER.COCOOP.EVAL_PROMPT_CHUNK"))
def add_cocoop_config(cfg: CN) -> None:
    cfg.TRAINER.COCOOP = CN()
    cfg.TRAINER.COCOOP.N_CTX = 16
    cfg.TRAINER.COCOOP.CTX_INIT = ""
    cfg.TRAINER.COCOOP.PREC = "auto"  # auto (bf16 where fast, else fp32), fp32, fp16, amp, bf16
    cfg.TRAINER.COCOOP.TEXT_CHECKPOINTING = False  # recompute text activations in backward: memory for time
    cfg.TRAINER.COCOOP.EVAL_PROMPT_CHUNK = 1024  # (image, class) prompts per text-tower pass at evaluation
    # Off = the public code's init. On: the meta-net's last layer starts at zero, so the shift is 0 and
    # training starts from CTX_INIT exactly; useful when the default shift dwarfs the token embeddings.
    cfg.TRAINER.COCOOP.ZERO_INIT_META = False


class CoCoOpPromptLearner(nn.Module):
    """Shared context plus a meta-net that maps an image feature to a shift of every context token."""

    def __init__(self, ctx: Tensor, embed_dim: int, text_width: int, zero_init_meta: bool = False):
        super().__init__()
        self.ctx = nn.Parameter(ctx)  # [n_ctx, text_width]
        hidden = max(1, embed_dim // 16)
        self.meta_net = nn.Sequential(
            nn.Linear(embed_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, text_width)
        )
        if zero_init_meta:
            # Zero output now; the last layer still gets the hidden activations as gradient, and once it
            # moves the first layer learns too.
            nn.init.zeros_(self.meta_net[-1].weight)
            nn.init.zeros_(self.meta_net[-1].bias)

    @classmethod
    def from_config(cls, cfg: CN, clip_model) -> CoCoOpPromptLearner:
        c = cfg.TRAINER.COCOOP
        ctx = init_context(clip_model, c.N_CTX, c.CTX_INIT)
        return cls(ctx, clip_model.embed_dim, clip_model.text_width, c.ZERO_INIT_META)

    @property
    def n_ctx(self) -> int:
        return self.ctx.shape[0]

    def contexts(self, image_features: Tensor) -> Tensor:
        """Instance contexts [B, n_ctx, D] from normalised image features [B, E]."""
        return self.ctx.unsqueeze(0) + self.meta_net(image_features).unsqueeze(1)


class CoCoOpNet(PromptModel):
    """Instance-conditioned prompts around a frozen CLIP."""

    def __init__(
        self,
        clip_model,
        prompt_learner: CoCoOpPromptLearner,
        class_prompts: ClassPrompts,
        eval_chunk: int = 1024,
        memory_budget_gb: float | None = None,
    ):
        super().__init__()
        self.clip = clip_model
        self.prompt_learner = prompt_learner
        self.class_prompts = class_prompts
        self.text_pass = InstanceTextPass(memory_budget_gb, eval_chunk)  # (image, class) prompts

    @classmethod
    def from_config(cls, cfg: CN, clip_model, classnames: Sequence[str]) -> CoCoOpNet:
        learner = CoCoOpPromptLearner.from_config(cfg, clip_model)
        check_context_fits(learner.n_ctx, classnames, clip_model.context_length, "TRAINER.COCOOP.N_CTX",
                           cfg.TRAINER.COCOOP.CTX_INIT)
        prompts = ClassPrompts(clip_model, classnames, learner.n_ctx)
        return cls(clip_model, learner, prompts, cfg.TRAINER.COCOOP.EVAL_PROMPT_CHUNK, cfg.TRAIN.MEMORY_BUDGET_GB)

    def _image_features(self, images: Tensor) -> Tensor:
        with torch.no_grad():
            return F.normalize(self.clip.encode_image(images).float(), dim=-1)

    def training_logits(self, images: Tensor) -> Tensor:
        """Logits [B, n_cls] with every (image, class) prompt in one text-tower pass."""
        features = self._image_features(images)
        text = self.text_pass.features(self.clip, self.class_prompts, self.prompt_learner.contexts(features))
        return cosine_logits(self.clip.logit_scale, features, text)

    def losses(self, images: dict[str, Tensor], labels: Tensor) -> dict[str, Tensor]:
        return classification_terms(self.training_logits(images["img"]), labels)

    def step_work(self, batch_size: int) -> dict:
        return {"view_keys": ("img",), "with_layers": False, "instances": batch_size}

    @torch.no_grad()
    def logits(self, images: Tensor) -> Tensor:
        """Evaluation logits [B, n_cls], prompts chunked so memory stays bounded."""
        features = self._image_features(images)
        contexts = self.prompt_learner.contexts(features)
        return self.text_pass.logits(self.clip, self.class_prompts, features, contexts, self.clip.logit_scale.exp())


@TRAINER_REGISTRY.register()
class CoCoOp(PromptTrainer):
    """CoCoOp trainer: cross-entropy on instance-conditioned logits."""

    CFG_NODE = "COCOOP"

    def check_cfg(self, cfg: CN) -> None:
        check_eval_prompt_chunk(cfg.TRAINER.COCOOP.EVAL_PROMPT_CHUNK, "TRAINER.COCOOP.EVAL_PROMPT_CHUNK")

    def build_model(self) -> None:
        clip_model = self.load_backbone()
        self.model = CoCoOpNet.from_config(self.cfg, clip_model, self.dm.dataset.classnames).to(self.device)
        self.register_learner(self.model.prompt_learner)
