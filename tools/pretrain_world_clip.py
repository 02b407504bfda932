"""Pretrain the small CLIP shipped in assets/ contrastively on captions of the embedded world.

Example (the command that made assets/world_clip_vit.pt)::

    HF_HUB_OFFLINE=1 .venv/bin/python tools/pretrain_world_clip.py --out assets/world_clip_vit.pt

Deterministic on CPU for a given seed, thread count and torch version. The pretraining images are a
seed stream of their own (``STREAM_PRETRAIN``), disjoint from the prompt-learning splits on disk.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import os.path as osp
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import clip  # noqa: E402
from clip.text import encode_from_embeddings  # noqa: E402
from clip.tiny import build_tiny_clip, save_openai_checkpoint  # noqa: E402
from datasets.world_gen import (  # noqa: E402
    STREAM_PRETRAIN,
    STREAM_ZEROSHOT_CHECK,
    class_names,
    render_pool,
)
from datasets.world_render import DOMAINS, caption_for  # noqa: E402

logger = logging.getLogger("pretrain_world_clip")

# CLIP's normalisation, which the prompt-learning configs use too.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
ZEROSHOT_TEMPLATE = "a photo of a {}."


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> normalised float [N, 3, H, W]."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def encode_tokens(model, tokens: torch.Tensor) -> torch.Tensor:
    """Text features of token ids, cut to the longest caption (exact for the causal text tower)."""
    return encode_from_embeddings(model, model.token_embedding(tokens), tokens.argmax(dim=-1))


def contrastive_loss(image_feat: torch.Tensor, text_feat: torch.Tensor, caption_idx: torch.Tensor,
                     logit_scale: torch.Tensor) -> torch.Tensor:
    """CLIP loss over the batch's distinct captions; images sharing a caption are all positives.

    The world has few distinct captions, so a batch repeats them; counting a repeat as a negative
    (plain CLIP loss) would push apart pairs that are equal by construction.
    """
    image_feat = F.normalize(image_feat, dim=-1)
    text_feat = F.normalize(text_feat, dim=-1)
    logits = logit_scale.exp() * image_feat @ text_feat.t()  # [B, U]
    loss_i2t = F.cross_entropy(logits, caption_idx)
    positives = F.one_hot(caption_idx, text_feat.shape[0]).t().float()  # [U, B]
    log_p = F.log_softmax(logits.t(), dim=-1)  # [U, B]
    loss_t2i = -((positives * log_p).sum(-1) / positives.sum(-1)).mean()
    return (loss_i2t + loss_t2i) / 2


@torch.no_grad()
def zeroshot_accuracy(model, images: np.ndarray, labels: list[int], batch_size: int = 256) -> float:
    """Top-1 accuracy (%) of ``"a photo of a {class}."`` prompts over all classes; ``model`` is open_clip or
    ``clip.CLIPBackbone``."""
    tokens = clip.tokenize([ZEROSHOT_TEMPLATE.format(n) for n in class_names()])
    text = F.normalize(model.encode_text(tokens).float(), dim=-1)
    correct = 0
    for start in range(0, len(labels), batch_size):
        x = to_tensor(images[start:start + batch_size])
        feat = F.normalize(model.encode_image(x).float(), dim=-1)
        pred = (feat @ text.t()).argmax(-1)
        correct += int((pred == torch.tensor(labels[start:start + batch_size])).sum())
    return 100.0 * correct / len(labels)


def per_domain_accuracy(model, images: np.ndarray, labels: list[int], attrs: list[dict]) -> dict[str, float]:
    """Zero-shot accuracy per domain of an in-memory sample."""
    result = {}
    for domain in DOMAINS:
        idx = [i for i, a in enumerate(attrs) if a["domain"] == domain]
        result[domain] = zeroshot_accuracy(model, images[idx], [labels[i] for i in idx])
    return result


def build_model(args: argparse.Namespace):
    return build_tiny_clip(
        "vit", embed_dim=args.embed_dim, image_size=32, vision_width=args.vision_width,
        vision_layers=args.vision_layers, patch_size=args.patch_size, vision_heads=args.vision_width // 64,
        text_width=args.text_width, text_layers=args.text_layers, text_heads=max(args.text_width // 32, 1),
    )


def lr_at(step: int, total: int, warmup: int, base_lr: float) -> float:
    """Linear warm-up, then cosine decay to zero."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    return 0.5 * base_lr * (1 + math.cos(math.pi * (step - warmup) / max(total - warmup, 1)))


def train(args: argparse.Namespace) -> dict:
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)

    logger.info("Rendering %d pretraining images per class and domain", args.per_class)
    images, labels, attrs = render_pool(args.seed, STREAM_PRETRAIN, args.per_class)
    # Half the captions carry the size word, so the text tower also sees plain "colour shape" phrases.
    captions = [caption_for(a, with_size=bool(rng.integers(2))) for a in attrs]
    vocab = sorted(set(captions))
    caption_ids = torch.tensor([vocab.index(c) for c in captions])
    vocab_tokens = clip.tokenize(vocab)
    x_all = to_tensor(images)
    logger.info("%d images, %d distinct captions", len(captions), len(vocab))

    model = build_model(args).train()
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("Model: %.2fM parameters", n_params / 1e6)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optim = torch.optim.AdamW([{"params": decay, "weight_decay": args.wd}, {"params": no_decay, "weight_decay": 0.0}],
                              lr=args.lr, betas=(0.9, 0.98), eps=1e-6)
    gen = torch.Generator().manual_seed(args.seed)
    order = torch.randperm(len(captions), generator=gen)
    cursor = 0
    start = time.time()
    bar = tqdm(range(args.steps), desc="pretrain", mininterval=5)
    for step in bar:
        if cursor + args.batch_size > len(order):
            order, cursor = torch.randperm(len(captions), generator=gen), 0
        idx = order[cursor:cursor + args.batch_size]
        cursor += args.batch_size
        x = x_all[idx]
        flip = torch.rand(len(idx), generator=gen) < 0.5  # shapes and colours survive a mirror
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        batch_caps, caption_idx = torch.unique(caption_ids[idx], return_inverse=True)
        for group in optim.param_groups:
            group["lr"] = lr_at(step, args.steps, args.warmup, args.lr)
        loss = contrastive_loss(model.encode_image(x), encode_tokens(model, vocab_tokens[batch_caps]),
                                caption_idx, model.logit_scale)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
        if step % args.log_every == 0 or step == args.steps - 1:
            logger.info("step %d/%d loss %.4f lr %.2e scale %.1f elapsed %.0fs", step, args.steps, loss.item(),
                        optim.param_groups[0]["lr"], model.logit_scale.exp().item(), time.time() - start)
    train_seconds = time.time() - start
    model.eval()
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    save_openai_checkpoint(model, args.out, half=True)

    # Measure on the checkpoint as users load it (fp16 weights upcast to fp32), not on the live model.
    loaded = clip.load(args.out, device="cpu")
    check_images, check_labels, check_attrs = render_pool(args.seed, STREAM_ZEROSHOT_CHECK, args.check_per_class)
    accuracy = per_domain_accuracy(loaded, check_images, check_labels, check_attrs)
    report = {
        "checkpoint": args.out,
        "bytes": osp.getsize(args.out),
        "parameters": n_params,
        "train_seconds": round(train_seconds, 1),
        "final_loss": round(loss.item(), 4),
        "zeroshot_accuracy": {k: round(v, 2) for k, v in accuracy.items()},
        "zeroshot_sample": f"stream {STREAM_ZEROSHOT_CHECK}, {args.check_per_class} per class and domain",
        "torch": torch.__version__,
        "threads": args.threads,
        "args": vars(args),
    }
    logger.info("Result: %s", json.dumps(report))
    return report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="assets/world_clip_vit.pt", help="checkpoint path (OpenAI state dict, fp16)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads; part of what makes a run bit-exact")
    p.add_argument("--steps", type=int, default=1200)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--wd", type=float, default=0.05)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--per-class", type=int, default=48, help="pretraining images per class and domain")
    p.add_argument("--check-per-class", type=int, default=5, help="zero-shot check images per class and domain")
    p.add_argument("--embed-dim", type=int, default=64)
    p.add_argument("--vision-width", type=int, default=128)
    p.add_argument("--vision-layers", type=int, default=4)
    p.add_argument("--patch-size", type=int, default=8)
    p.add_argument("--text-width", type=int, default=64)
    p.add_argument("--text-layers", type=int, default=3)
    p.add_argument("--log-every", type=int, default=250)
    p.add_argument("--report", default=None, help="also write the result summary as JSON here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = parse_args(argv)
    report = train(args)
    if args.report:
        with open(args.report, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
