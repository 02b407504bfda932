"""The two contracts every prompt method fulfils: its model (``PromptModel``) and its trainer (``PromptTrainer``).

A method file defines a ``PromptModel`` subclass with ``losses`` and ``logits`` and a ``PromptTrainer``
subclass that sets ``CFG_NODE`` and builds the model; the engine does the rest (docs/INTERNALS.md).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

from torch import Tensor, nn

import clip
from dassl.engine import TrainerX
from dassl.optim import build_lr_scheduler, build_optimizer
from dassl.utils import ConfigError

from .backbone_loading import load_clip
from .checks import check_input_size
from .chunking import warn_if_memory_budget_unused
from .templates import dataset_template

__all__ = ["PromptModel", "PromptTrainer"]

logger = logging.getLogger(__name__)


class PromptModel(nn.Module):
    """A method's model: ``losses`` for a training batch, ``logits`` for evaluation images.

    ``losses(images, labels)``: ``images`` maps each key of ``image_views`` to [B, 3, H, W]; it returns
    named terms (keys starting with "loss" are summed by the engine, weights already applied; others,
    e.g. "acc", are only logged). ``logits(images)``: [B, n_cls] for the original view only.
    """

    image_views: tuple[str, ...] = ("img",)  # batch keys a training step reads, "img" first

    def losses(self, images: dict[str, Tensor], labels: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError(f"{type(self).__name__} is evaluation-only: it defines no training losses")

    def logits(self, images: Tensor) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} must define logits(images) -> [B, n_cls]")

    def forward(self, images: Tensor) -> Tensor:
        return self.logits(images)

    def learned_prompts(self) -> tuple[Sequence[Tensor], clip.VisionPrompts | None]:
        """(deep text prompts, vision prompts) the towers get besides the shallow text context; none here."""
        return (), None

    def step_work(self, batch_size: int) -> dict:
        """The necessary work of one training step, for tools/benchmark.py.

        ``view_keys``: batch keys whose images go through the image tower in one pass, with autograd to the
        vision prompts when ``learned_prompts`` has some, else without; ``with_layers``: per-layer tokens are
        read; ``teacher_views``: views that also go through the unprompted tower without autograd (a frozen
        teacher); ``instances``: contexts per step, each paired with every class (0: the class text features
        are fixed, computed once). Work done once per run (fixed targets) is not a step's.
        """
        return {"view_keys": tuple(self.image_views), "with_layers": False, "teacher_views": (), "instances": 1}


class PromptTrainer(TrainerX):
    """What every prompt method's trainer shares: a frozen CLIP from the config and one learned module.

    Subclasses set ``CFG_NODE`` (their ``TRAINER.<NODE>``, whose ``PREC`` the engine resolves before
    ``build_model``) and build ``self.model``, a ``PromptModel``.
    """

    CLASS_SET_KEYS = ("token_prefix", "token_suffix")  # class-name token buffers, rebuilt for each class set

    @property
    def method_cfg(self):
        """This method's config node, ``cfg.TRAINER.<CFG_NODE>``."""
        return self.cfg.TRAINER[self.CFG_NODE]

    def load_backbone(self):
        """Load the frozen CLIP in the weight dtype ``self.precision`` needs and check INPUT.SIZE against it."""
        clip_model = load_clip(self.cfg, self.device, self.precision_requested, self.precision)
        check_input_size(self.cfg, clip_model)
        clip_model.text_checkpointing = bool(self.method_cfg.get("TEXT_CHECKPOINTING", False))
        return clip_model

    def template(self) -> str:
        """The hand-written prompt template: ``TRAINER.<NODE>.TEMPLATE`` when set, else the dataset's own."""
        override = self.method_cfg.get("TEMPLATE", "")
        if override and "{}" not in override:
            raise ConfigError(
                f"TRAINER.{self.CFG_NODE}.TEMPLATE {override!r} has no '{{}}' for the class name"
            )
        return override or dataset_template(self.dm.dataset)

    def register_learner(self, learner: nn.Module) -> None:
        """Give the learned module its optimizer and scheduler and register it as ``prompt_learner``."""
        self.optim = build_optimizer(learner, self.cfg.OPTIM)
        self.sched = build_lr_scheduler(self.optim, self.cfg.OPTIM)
        self.register_model("prompt_learner", learner, self.optim, self.sched)
        logger.info("%s learns %d parameters", type(self).__name__, sum(p.numel() for p in learner.parameters()))
        warn_if_memory_budget_unused(self.cfg, getattr(self, "model", learner))

    def weight_files(self) -> dict[str, str | None]:
        """The backbone's file in the run record: MODEL.BACKBONE.NAME as a path, or the cached file a name loads."""
        return {**super().weight_files(), "MODEL.BACKBONE.NAME": clip.weights_file(self.cfg.MODEL.BACKBONE.NAME)}

    def forward_train(self, batch: dict) -> dict[str, Tensor]:
        """The model's named losses on the batch's views (the engine runs this under autocast)."""
        labels = batch["label"].to(self.device, non_blocking=True)
        images = {k: batch[k].to(self.device, non_blocking=True) for k in self.model.image_views}
        return self.model.losses(images, labels)

    def inference(self, images: Tensor) -> Tensor:
        return self.model.logits(images)
