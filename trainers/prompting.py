"""Prompt pieces every method shares: backbone loading, class-name prompts, text encoding, templates."""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import clip
from dassl.engine import TrainerX, resolve_precision
from dassl.optim import build_lr_scheduler, build_optimizer
from dassl.utils import load_checkpoint, load_state_dict_checked

logger = logging.getLogger(__name__)

__all__ = [
    "PRECISIONS",
    "CLASS_TOKEN_POSITIONS",
    "ClassPrompts",
    "load_clip",
    "check_precision",
    "check_input_size",
    "check_context_fits",
    "init_context",
    "encode_prompt_embeddings",
    "zeroshot_template",
    "load_learned_state",
    "PromptTrainer",
    "classification_terms",
    "cosine_logits",
]

PRECISIONS = ("fp32", "fp16", "amp", "bf16")
CLASS_TOKEN_POSITIONS = ("end", "middle", "front")
CTX_PLACEHOLDER = "X"  # one BPE token per word; stands in for each learned context vector

# Zero-shot templates in the "a photo of a {}." family, keyed by DATASET.NAME.
ZEROSHOT_TEMPLATES = {
    "OxfordPets": "a photo of a {}, a type of pet.",
    "OxfordFlowers": "a photo of a {}, a type of flower.",
    "FGVCAircraft": "a photo of a {}, a type of aircraft.",
    "DescribableTextures": "{} texture.",
    "EuroSAT": "a centered satellite photo of {}.",
    "StanfordCars": "a photo of a {}.",
    "Food101": "a photo of {}, a type of food.",
    "SUN397": "a photo of a {}.",
    "Caltech101": "a photo of a {}.",
    "UCF101": "a photo of a person doing {}.",
    "ImageNet": "a photo of a {}.",
    "ImageNetSketch": "a photo of a {}.",
    "ImageNetV2": "a photo of a {}.",
    "ImageNetA": "a photo of a {}.",
    "ImageNetR": "a photo of a {}.",
}
DEFAULT_TEMPLATE = "a photo of a {}."


def zeroshot_template(dataset_name: str) -> str:
    """The hand-written prompt template for a dataset, or the generic one."""
    return ZEROSHOT_TEMPLATES.get(dataset_name, DEFAULT_TEMPLATE)


def check_precision(prec: str, key: str) -> str:
    """Validate a PREC config value."""
    if prec not in PRECISIONS:
        raise ValueError(f"{key} is {prec!r}; valid values: {', '.join(PRECISIONS)}")
    return prec


def load_clip(cfg, device: torch.device | str, requested: str, resolved: str):
    """Load the frozen backbone named by MODEL.BACKBONE.NAME.

    Weights are fp16 only when PREC is "fp16" and the device runs it; amp/bf16 keep fp32 weights
    and rely on autocast, which also keeps LayerNorm in fp32.
    """
    weights = "fp16" if requested == "fp16" and resolved == "fp16" else "fp32"
    name = cfg.MODEL.BACKBONE.NAME
    if not name:
        raise ValueError("MODEL.BACKBONE.NAME is empty; set a CLIP name (e.g. ViT-B/16) or a checkpoint path")
    model = clip.load(name, device=device, precision=weights)
    model.requires_grad_(False)
    return model.eval()


def check_input_size(cfg, clip_model) -> None:
    """INPUT.SIZE must be the backbone's square input resolution."""
    size = tuple(cfg.INPUT.SIZE)
    expected = (clip_model.image_size, clip_model.image_size)
    if size != expected:
        raise ValueError(
            f"INPUT.SIZE is {size} but the backbone {cfg.MODEL.BACKBONE.NAME!r} takes {expected}; set INPUT.SIZE {expected}"
        )


def _token_counts(texts: Sequence[str]) -> list[int]:
    """Number of tokens of each text, SOS and EOT included (tokenised with room to spare)."""
    ids = clip.tokenize(list(texts), context_length=1024)
    return (ids.argmax(dim=-1) + 1).tolist()


def check_context_fits(n_ctx: int, classnames: Sequence[str], context_length: int, key: str) -> None:
    """N_CTX context tokens plus the longest class prompt must fit the text tower's context length."""
    counts = _token_counts([f"{name.replace('_', ' ')}." for name in classnames])  # as ClassPrompts builds them
    longest = max(range(len(counts)), key=counts.__getitem__)
    needed = n_ctx + counts[longest]
    if needed > context_length:
        raise ValueError(
            f"{key} {n_ctx} + class name {classnames[longest]!r} need {needed} tokens but the context length "
            f"is {context_length}; use {key} <= {context_length - counts[longest]}"
        )


def init_context(clip_model, n_ctx: int, ctx_init: str, n_cls: int | None = None) -> Tensor:
    """Initial context vectors: the embeddings of ``ctx_init`` words, else N(0, 0.02).

    With ``ctx_init`` the number of context vectors is its token count (``n_ctx`` is ignored);
    ``n_cls`` gives one context per class (class-specific context) instead of a shared one.
    """
    ctx_init = ctx_init.replace("_", " ").strip()
    if ctx_init:
        ids = clip.tokenize([ctx_init], context_length=clip_model.context_length)
        n_words = int(ids.argmax(dim=-1)) - 1
        with torch.no_grad():
            emb = clip_model.token_embedding(ids.to(clip_model.logit_scale.device))[0, 1 : 1 + n_words]
        ctx = emb.float().clone()
        if n_cls is not None:
            ctx = ctx.unsqueeze(0).repeat(n_cls, 1, 1)
        return ctx
    if n_ctx < 1:
        raise ValueError(f"N_CTX is {n_ctx}; it must be >= 1 when CTX_INIT is empty")
    shape = (n_ctx, clip_model.text_width) if n_cls is None else (n_cls, n_ctx, clip_model.text_width)
    return torch.empty(shape).normal_(0.0, 0.02)


def encode_prompt_embeddings(clip_model, embeddings: Tensor, tokens: Tensor, truncate: bool = True) -> Tensor:
    """L2-normalised fp32 text features of prompt embeddings [N, L, D] with token ids [N, L]."""
    features = clip_model.encode_prompts(embeddings.to(clip_model.dtype), tokens, truncate=truncate)
    return F.normalize(features.float(), dim=-1)


class ClassPrompts(nn.Module):
    """Frozen token pieces of the prompt "{ctx} {classname}." for one class set.

    prefix = SOS embedding, suffix = class name, ".", EOT (cut after the longest EOT unless ``cut=False``).
    Both are non-persistent buffers: they depend on the class set, not on training.
    """

    def __init__(self, clip_model, classnames: Sequence[str], n_ctx: int, position: str = "end", cut: bool = True):
        super().__init__()
        if position not in CLASS_TOKEN_POSITIONS:
            raise ValueError(f"CLASS_TOKEN_POSITION is {position!r}; valid: {', '.join(CLASS_TOKEN_POSITIONS)}")
        names = [name.replace("_", " ") for name in classnames]
        placeholder = " ".join([CTX_PLACEHOLDER] * n_ctx)
        tokens = clip.tokenize([f"{placeholder} {name}." for name in names], context_length=clip_model.context_length)
        if cut:  # the text tower is causal: tokens after the last EOT never change the output
            tokens = tokens[:, : int(tokens.argmax(dim=-1).max()) + 1]
        device = clip_model.logit_scale.device
        tokens = tokens.to(device)
        with torch.no_grad():
            embeddings = clip_model.token_embedding(tokens).float()
        self.n_ctx = n_ctx
        self.n_cls = len(names)
        self.register_buffer("tokens", tokens, persistent=False)
        self.register_buffer("prefix", embeddings[:, :1], persistent=False)
        self.register_buffer("suffix", embeddings[:, 1 + n_ctx :], persistent=False)
        order = None
        if position != "end":
            name_lens = [n - 2 for n in _token_counts(names)]  # without SOS/EOT
            order = self._token_order(name_lens, n_ctx, tokens.shape[1], position).to(device)
        self.register_buffer("order", order, persistent=False)

    @staticmethod
    def _token_order(name_lens: list[int], n_ctx: int, length: int, position: str) -> Tensor:
        """Per class, the source position of each output token, moving the class name to front/middle."""
        rows = []
        half = n_ctx // 2
        for k in name_lens:
            ctx = list(range(1, 1 + n_ctx))
            name = list(range(1 + n_ctx, 1 + n_ctx + k))
            rest = list(range(1 + n_ctx + k, length))
            body = name + ctx if position == "front" else ctx[:half] + name + ctx[half:]
            rows.append([0] + body + rest)
        return torch.tensor(rows, dtype=torch.long)

    def embed(self, ctx: Tensor, class_idx: Tensor) -> tuple[Tensor, Tensor]:
        """Prompt embeddings [N, L, D] and token ids [N, L] for per-prompt contexts ctx [N, n_ctx, D]."""
        embeddings = torch.cat([self.prefix[class_idx], ctx.to(self.prefix.dtype), self.suffix[class_idx]], dim=1)
        tokens = self.tokens[class_idx]
        if self.order is not None:
            order = self.order[class_idx]
            embeddings = embeddings.gather(1, order.unsqueeze(-1).expand_as(embeddings))
            tokens = tokens.gather(1, order)
        return embeddings, tokens

    def class_features(self, clip_model, ctx: Tensor) -> Tensor:
        """Text features [n_cls, E] for one shared context [n_ctx, D] or class-specific [n_cls, n_ctx, D]."""
        if ctx.dim() == 2:
            ctx = ctx.unsqueeze(0).expand(self.n_cls, -1, -1)
        class_idx = torch.arange(self.n_cls, device=self.tokens.device)
        return encode_prompt_embeddings(clip_model, *self.embed(ctx, class_idx))

    def instance_features(self, clip_model, ctx: Tensor) -> Tensor:
        """Text features [M, n_cls, E] for per-instance contexts [M, n_ctx, D], in one text-tower pass."""
        m = ctx.shape[0]
        ctx = ctx.unsqueeze(1).expand(-1, self.n_cls, -1, -1).reshape(m * self.n_cls, *ctx.shape[1:])
        class_idx = torch.arange(self.n_cls, device=self.tokens.device).repeat(m)
        features = encode_prompt_embeddings(clip_model, *self.embed(ctx, class_idx))
        return features.view(m, self.n_cls, -1)

    def instance_logits(
        self, clip_model, image_features: Tensor, ctx: Tensor, logit_scale: Tensor, chunk: int
    ) -> Tensor:
        """Logits [B, n_cls] of normalised image features [B, E] against their own contexts [B, n_ctx, D].

        (image, class) pairs go through the text tower ``chunk`` at a time, so memory stays bounded.
        """
        b = image_features.shape[0]
        device = image_features.device
        logits = image_features.new_empty(b * self.n_cls)
        for start in range(0, b * self.n_cls, chunk):
            pair = torch.arange(start, min(start + chunk, b * self.n_cls), device=device)
            image_idx, class_idx = pair // self.n_cls, pair % self.n_cls
            text = encode_prompt_embeddings(clip_model, *self.embed(ctx[image_idx], class_idx))
            logits[pair] = (image_features[image_idx] * text).sum(-1)
        return logit_scale * logits.view(b, self.n_cls)


# Class-name buffers of upstream checkpoints: rebuilt for the current class set, so never loaded.
_CLASS_SET_KEYS = ("token_prefix", "token_suffix")


def load_learned_state(trainer, directory: str, epoch: int | None = None) -> None:
    """Load every registered model's learned parameters; missing learned keys are an error."""
    if not directory:
        logger.warning("Note that load_model() is skipped as no pretrained model is given")
        return
    filename = "model-best.pth.tar" if epoch is None else f"model.pth.tar-{epoch}"
    for name in trainer.get_model_names():
        path = os.path.join(directory, name, filename)
        if not os.path.exists(path):
            raise FileNotFoundError(f'Model not found at "{path}"')
        checkpoint = load_checkpoint(path)
        load_state_dict_checked(trainer._models[name], checkpoint["state_dict"], path, _CLASS_SET_KEYS)
        logger.info('Loaded model weights from "%s" (epoch = %s)', path, checkpoint.get("epoch"))


def cosine_logits(logit_scale: Tensor, image_features: Tensor, text_features: Tensor) -> Tensor:
    """CLIP logits exp(logit_scale)·<f, t> in fp32 even under autocast (bf16 would round them to ~0.1).

    ``text_features`` is [C, E] (shared by all images) or [B, C, E] (one set per image).
    """
    with torch.autocast(image_features.device.type, enabled=False):
        f, t = image_features.float(), text_features.float()
        similarity = f @ t.t() if t.dim() == 2 else torch.einsum("be,bce->bc", f, t)
        return logit_scale.float().exp() * similarity


def classification_terms(logits: Tensor, labels: Tensor) -> dict[str, Tensor]:
    """Cross-entropy loss and batch accuracy (%) in the engine's named-loss form."""
    acc = (logits.argmax(dim=-1) == labels).float().mean().detach() * 100.0
    return {"loss_ce": F.cross_entropy(logits, labels), "acc": acc}


class PromptTrainer(TrainerX):
    """What every prompt method's trainer shares: a frozen CLIP from the config and one learned module.

    Subclasses set ``CFG_NODE`` (their ``TRAINER.<NODE>`` with a ``PREC`` key) and build ``self.model``.
    """

    CFG_NODE = ""

    def check_cfg(self, cfg) -> None:
        check_precision(cfg.TRAINER[self.CFG_NODE].PREC, f"TRAINER.{self.CFG_NODE}.PREC")

    def load_backbone(self):
        """Resolve PREC for this device, load the frozen CLIP and check INPUT.SIZE against it."""
        prec = self.cfg.TRAINER[self.CFG_NODE].PREC
        self.precision = resolve_precision(prec, self.device)
        clip_model = load_clip(self.cfg, self.device, prec, self.precision)
        check_input_size(self.cfg, clip_model)
        clip_model.text_checkpointing = bool(self.cfg.TRAINER[self.CFG_NODE].get("TEXT_CHECKPOINTING", False))
        return clip_model

    def register_learner(self, learner: nn.Module) -> None:
        """Give the learned module its optimizer and scheduler and register it as ``prompt_learner``."""
        self.optim = build_optimizer(learner, self.cfg.OPTIM)
        self.sched = build_lr_scheduler(self.optim, self.cfg.OPTIM)
        self.register_model("prompt_learner", learner, self.optim, self.sched)

    def inference(self, images: Tensor) -> Tensor:
        return self.model(images)

    def load_model(self, directory: str, epoch: int | None = None) -> None:
        load_learned_state(self, directory, epoch)
