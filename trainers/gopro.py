"""GOPro (Singha et al., BMVC 2023, arXiv 2308.11605): style/content-conditioned prompts with SSL losses.

The math follows the public implementation (see the README's method section) with its defects fixed: views
come from the data pipeline, evaluation runs the original view only, dims come from the backbone.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from yacs.config import CfgNode as CN

from dassl.config import ConfigError, register_cfg_extension
from dassl.engine import TRAINER_REGISTRY
from dassl.utils.distributed import get_world_size, global_batch_apply

from .base import PromptModel, PromptTrainer
from .checks import check_context_fits
from .chunking import InstanceTextPass, check_eval_prompt_chunk
from .class_prompts import ClassPrompts, init_context
from .losses import consistency_loss, cosine_logits, simclr_loss
from .views import VIEW_KEYS, build_view_transforms

logger = logging.getLogger(__name__)

STD_EPS = 2.3e-8  # inside the sqrt of the token variance, as the public code


@register_cfg_extension(run_local_keys=("TRAINER.GOPRO.TEXT_CHECKPOINTING", "TRAINER.GOPRO.EVAL_PROMPT_CHUNK"))
def add_gopro_config(cfg: CN) -> None:
    cfg.TRAINER.GOPRO = CN()
    cfg.TRAINER.GOPRO.N_CTX = 4
    cfg.TRAINER.GOPRO.CTX_INIT = "a photo of a"  # n_ctx becomes its token count when set
    cfg.TRAINER.GOPRO.PREC = "auto"  # auto (bf16 where fast, else fp32), fp32, fp16, amp, bf16
    cfg.TRAINER.GOPRO.W_CE = 1.0
    cfg.TRAINER.GOPRO.W_CONSISTENCY = 1.0
    cfg.TRAINER.GOPRO.W_CONTRASTIVE = 0.1
    cfg.TRAINER.GOPRO.SIMCLR_TEMPERATURE = 0.1
    cfg.TRAINER.GOPRO.VIEW_SPECIFIC_RHO = False  # paper figure: one layer mix per view
    cfg.TRAINER.GOPRO.PROJECTOR_IN_LOGITS = False  # paper figure: image projector output feeds the logits
    cfg.TRAINER.GOPRO.TEXT_CHECKPOINTING = False  # recompute text activations in backward: memory for time
    cfg.TRAINER.GOPRO.EVAL_PROMPT_CHUNK = 1024  # (image, class) prompts per text-tower pass at evaluation
    # Off = the public code's init. On: rho starts at zero, so the shift pi(x) is 0 and training starts from
    # CTX_INIT exactly; useful when the default shift dwarfs the token embeddings (small CLIPs).
    cfg.TRAINER.GOPRO.ZERO_INIT_SHIFT = False


def layer_statistics(layers: Sequence[Tensor]) -> list[tuple[Tensor, Tensor]]:
    """Per layer, token mean and population token std [B, w] (ViT tokens [B,T,w]; ResNet maps [B,C,H,W])."""
    stats = []
    for x in layers:
        x = x.float()
        if x.dim() == 4:
            x = x.flatten(2).transpose(1, 2)
        stats.append((x.mean(dim=1), torch.sqrt(x.var(dim=1, unbiased=False) + STD_EPS)))
    return stats


class GOProPromptLearner(nn.Module):
    """Everything GOPro learns: context, per-layer style/content projectors, layer mix rho, image projector."""

    def __init__(
        self,
        ctx: Tensor,
        layer_widths: Sequence[int],
        text_width: int,
        embed_dim: int,
        view_specific_rho: bool = False,
        zero_init_shift: bool = False,
    ):
        super().__init__()
        n_layers = len(layer_widths)
        self.ctx = nn.Parameter(ctx)  # [n_ctx, text_width]
        self.style_projector = nn.ModuleList(nn.Linear(w, text_width) for w in layer_widths)
        self.content_projector = nn.ModuleList(nn.Linear(w, text_width) for w in layer_widths)
        n_rho = len(VIEW_KEYS) if view_specific_rho else 1
        self.rho = nn.ModuleList(nn.Linear(n_layers, 1) for _ in range(n_rho))
        if zero_init_shift:
            # rho is the last map before the shift: zero output now, yet its weight gets the per-layer
            # inputs as gradient, and once it moves the projectors behind it learn too.
            for rho in self.rho:
                nn.init.zeros_(rho.weight)
                nn.init.zeros_(rho.bias)
        self.image_projector = nn.Sequential(nn.Linear(embed_dim, embed_dim), nn.BatchNorm1d(embed_dim))

    @classmethod
    def from_config(cls, cfg: CN, clip_model) -> GOProPromptLearner:
        g = cfg.TRAINER.GOPRO
        return cls(
            ctx=init_context(clip_model, g.N_CTX, g.CTX_INIT),
            layer_widths=clip_model.visual_layer_widths,
            text_width=clip_model.text_width,
            embed_dim=clip_model.embed_dim,
            view_specific_rho=g.VIEW_SPECIFIC_RHO,
            zero_init_shift=g.ZERO_INIT_SHIFT,
        )

    @property
    def n_ctx(self) -> int:
        return self.ctx.shape[0]

    def context_shift(self, layers: Sequence[Tensor], view_ids: Sequence[int]) -> Tensor:
        """Shift pi(x) [N, text_width]; rows are len(view_ids) equal blocks, block k from view view_ids[k]."""
        per_layer = [
            0.5 * (style(0.5 * (mean + std)) + content(mean))
            for (mean, std), style, content in zip(
                layer_statistics(layers), self.style_projector, self.content_projector, strict=True
            )
        ]
        mixed_input = torch.stack(per_layer, dim=-1)  # [N, text_width, n_layers]
        blocks = mixed_input.chunk(len(view_ids), dim=0)
        rhos = [self.rho[v] if len(self.rho) > 1 else self.rho[0] for v in view_ids]
        return torch.cat([rho(block).squeeze(-1) for rho, block in zip(rhos, blocks, strict=True)], dim=0)

    def contexts(self, shift: Tensor) -> Tensor:
        """Instance contexts [N, n_ctx, text_width]: the same shift added to every context token."""
        return self.ctx.unsqueeze(0) + shift.unsqueeze(1)


class GOProNet(PromptModel):
    """GOPro's losses and logits around a frozen CLIP; only ``prompt_learner`` is learned or saved."""

    def __init__(
        self,
        clip_model,
        prompt_learner: GOProPromptLearner,
        class_prompts: ClassPrompts,
        w_ce: float = 1.0,
        w_consistency: float = 1.0,
        w_contrastive: float = 0.1,
        temperature: float = 0.1,
        projector_in_logits: bool = False,
        eval_chunk: int = 1024,
        memory_budget_gb: float | None = None,
    ):
        super().__init__()
        self.clip = clip_model
        self.prompt_learner = prompt_learner
        self.class_prompts = class_prompts
        self.w_ce, self.w_consistency, self.w_contrastive = w_ce, w_consistency, w_contrastive
        self.temperature = temperature
        self.projector_in_logits = projector_in_logits
        self.text_pass = InstanceTextPass(memory_budget_gb, eval_chunk)  # (view, image, class) prompts

    @classmethod
    def from_config(cls, cfg: CN, clip_model, classnames: Sequence[str]) -> GOProNet:
        g = cfg.TRAINER.GOPRO
        learner = GOProPromptLearner.from_config(cfg, clip_model)
        check_context_fits(learner.n_ctx, classnames, clip_model.context_length, "TRAINER.GOPRO.N_CTX",
                           g.CTX_INIT)
        return cls(
            clip_model,
            learner,
            ClassPrompts(clip_model, classnames, learner.n_ctx),
            w_ce=g.W_CE,
            w_consistency=g.W_CONSISTENCY,
            w_contrastive=g.W_CONTRASTIVE,
            temperature=g.SIMCLR_TEMPERATURE,
            projector_in_logits=g.PROJECTOR_IN_LOGITS,
            eval_chunk=g.EVAL_PROMPT_CHUNK,
            memory_budget_gb=cfg.TRAIN.MEMORY_BUDGET_GB,
        )

    @property
    def eval_chunk(self) -> int:
        return self.text_pass.eval_chunk

    @staticmethod
    def image_views_for(w_consistency: float, w_contrastive: float) -> tuple[str, ...]:
        """Views a training step needs, in VIEW_KEYS order: a zero weight drops the views only it uses."""
        keys = ["img"]
        if w_consistency > 0 or w_contrastive > 0:
            keys.append("img_moco")
        if w_consistency > 0:
            keys.append("img_augmix")
        return tuple(keys)

    @property
    def image_views(self) -> tuple[str, ...]:
        return self.image_views_for(self.w_consistency, self.w_contrastive)

    @property
    def text_views(self) -> tuple[str, ...]:
        """Views whose class text features a step needs (a prefix of ``image_views``)."""
        return VIEW_KEYS if self.w_consistency > 0 else ("img",)

    def _logit_features(self, image_features: Tensor, projected: Tensor | None) -> Tensor:
        if self.projector_in_logits:
            return F.normalize(projected, dim=-1)
        return image_features

    def step_work(self, batch_size: int) -> dict:
        return {"view_keys": self.image_views, "with_layers": True, "instances": len(self.text_views) * batch_size}

    def project(self, features: Tensor) -> Tensor:
        """Image projector output in fp32 outside autocast, so BatchNorm's statistics are fp32 as well."""
        with torch.autocast(features.device.type, enabled=False):
            return self.prompt_learner.image_projector(features.float())

    def losses(self, images: dict[str, Tensor], labels: Tensor) -> dict[str, Tensor]:
        """Weighted loss terms and accuracy of one batch; ``images`` maps view keys to [B, 3, H, W]."""
        b = labels.shape[0]
        with torch.no_grad():  # one pass of the frozen image tower over every view the step needs
            features, layers = self.clip.encode_image_with_layers(torch.cat([images[k] for k in self.image_views]))
        features = F.normalize(features.float(), dim=-1).view(len(self.image_views), b, -1)

        n_text = len(self.text_views)
        shift = self.prompt_learner.context_shift(
            [layer[: n_text * b] for layer in layers], [VIEW_KEYS.index(k) for k in self.text_views]
        )
        contexts = self.prompt_learner.contexts(shift)
        text = self.text_pass.features(self.clip, self.class_prompts, contexts)  # one pass, or budget chunks
        text = text.view(n_text, b, self.class_prompts.n_cls, -1)

        # The projector sees the global batch on every rank (the features are frozen, so a plain gather):
        # its BatchNorm statistics and the SimCLR negatives are exactly those of one process.
        needs_projection = self.w_contrastive > 0 or self.projector_in_logits
        projected_all, projected = global_batch_apply(self.project, features[0]) if needs_projection else (None, None)
        image_features = self._logit_features(features[0], projected)
        logits = cosine_logits(self.clip.logit_scale, image_features, text[0])

        zero = logits.new_zeros(())
        terms = {"loss_ce": self.w_ce * F.cross_entropy(logits, labels) if self.w_ce > 0 else zero}
        terms["loss_consistency"] = (
            self.w_consistency * consistency_loss(text[0], list(text[1:])) if self.w_consistency > 0 else zero
        )
        terms["loss_contrastive"] = zero
        if self.w_contrastive > 0:
            projected_moco, _ = global_batch_apply(self.project, features[1])
            terms["loss_contrastive"] = self.w_contrastive * simclr_loss(projected_all, projected_moco, self.temperature)
        terms["acc"] = (logits.argmax(dim=-1) == labels).float().mean().detach() * 100.0
        return terms

    @torch.no_grad()
    def logits(self, images: Tensor) -> Tensor:
        """Class logits [B, n_cls] of the original view, prompts chunked through the text tower."""
        features, layers = self.clip.encode_image_with_layers(images)
        features = F.normalize(features.float(), dim=-1)
        projected = self.project(features) if self.projector_in_logits else None
        contexts = self.prompt_learner.contexts(self.prompt_learner.context_shift(layers, [0]))
        return self.text_pass.logits(
            self.clip, self.class_prompts, self._logit_features(features, projected), contexts,
            self.clip.logit_scale.exp(),
        )


def check_gopro_cfg(cfg: CN) -> None:
    """Validate TRAINER.GOPRO (and the batch its projector needs) before anything is built."""
    g = cfg.TRAINER.GOPRO
    weights = {"W_CE": g.W_CE, "W_CONSISTENCY": g.W_CONSISTENCY, "W_CONTRASTIVE": g.W_CONTRASTIVE}
    for key, value in weights.items():
        if value < 0:
            raise ConfigError(f"TRAINER.GOPRO.{key} is {value}; valid: >= 0 (a loss weight)")
    if not any(v > 0 for v in weights.values()):
        raise ConfigError(
            "TRAINER.GOPRO.W_CE, W_CONSISTENCY and W_CONTRASTIVE are all 0; valid: at least one > 0"
        )
    if g.SIMCLR_TEMPERATURE <= 0:
        raise ConfigError(f"TRAINER.GOPRO.SIMCLR_TEMPERATURE is {g.SIMCLR_TEMPERATURE}; valid: > 0")
    per_rank = cfg.DATALOADER.TRAIN_X.BATCH_SIZE // get_world_size()
    if (g.W_CONTRASTIVE > 0 or g.PROJECTOR_IN_LOGITS) and per_rank < 2:
        raise ConfigError(
            f"DATALOADER.TRAIN_X.BATCH_SIZE {cfg.DATALOADER.TRAIN_X.BATCH_SIZE} gives {per_rank} image(s) per process; "
            "the image projector's BatchNorm needs >= 2 (or set TRAINER.GOPRO.W_CONTRASTIVE 0)"
        )
    check_eval_prompt_chunk(g.EVAL_PROMPT_CHUNK, "TRAINER.GOPRO.EVAL_PROMPT_CHUNK")


@TRAINER_REGISTRY.register()
class GOPro(PromptTrainer):
    """GOPro trainer: named losses for the engine, original-view logits for evaluation."""

    CFG_NODE = "GOPRO"

    def check_cfg(self, cfg: CN) -> None:
        check_gopro_cfg(cfg)

    def build_data_loader(self) -> None:
        g = self.cfg.TRAINER.GOPRO
        views = GOProNet.image_views_for(g.W_CONSISTENCY, g.W_CONTRASTIVE)
        super().build_data_loader(custom_tfm_train=build_view_transforms(self.cfg, views))

    def build_model(self) -> None:
        clip_model = self.load_backbone()
        self.model = GOProNet.from_config(self.cfg, clip_model, self.dm.dataset.classnames).to(self.device)
        self.register_learner(self.model.prompt_learner)
