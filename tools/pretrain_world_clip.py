"""Pretrain the small CLIP shipped in assets/ contrastively on the embedded world's "web" corpus.

Example (the command that made assets/world_clip_vit.pt; see assets/README.md for the recipe)::

    HF_HUB_OFFLINE=1 .venv/bin/python tools/pretrain_world_clip.py --out assets/world_clip_vit.pt

The corpus (``datasets/world/corpus.py``) is rendered on the fly by DataLoader workers: sample ``i``
depends only on (seed, i), so the batches, and with ``--threads`` fixed the weights, are the same
whatever the number of workers. Deterministic on CPU for a given seed, thread count and torch version.
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
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import clip  # noqa: E402
from clip.text import encode_from_embeddings  # noqa: E402
from clip.tiny import build_tiny_clip, save_openai_checkpoint  # noqa: E402
from dassl.engine.precision import autocast_context  # noqa: E402
from datasets.world.corpus import pretrain_sample  # noqa: E402
from datasets.world.gen import STREAM_CHECK, WorldSpec, render_class  # noqa: E402
from datasets.world.tasks import TASKS  # noqa: E402

logger = logging.getLogger("pretrain_world_clip")

# CLIP's normalisation, which the prompt-learning configs use too.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> normalised float [N, 3, H, W]."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (x - mean) / std


class CorpusBatches(Dataset):
    """Batch ``step`` of the corpus: uint8 images [B, H, W, 3] and token ids [B, context]."""

    def __init__(self, seed: int, batch_size: int, steps: int, image_size: int, context_length: int):
        self.seed, self.batch_size, self.steps = seed, batch_size, steps
        self.image_size, self.context_length = image_size, context_length

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        images, captions = [], []
        for index in range(step * self.batch_size, (step + 1) * self.batch_size):
            image, caption = pretrain_sample(self.seed, index, self.image_size)
            images.append(np.asarray(image))
            captions.append(caption)
        return torch.from_numpy(np.stack(images)), clip.tokenize(captions, context_length=self.context_length)


def encode_tokens(model, tokens: torch.Tensor) -> torch.Tensor:
    """Text features of token ids, cut to the longest caption (exact for the causal text tower)."""
    return encode_from_embeddings(model, model.token_embedding(tokens), tokens.argmax(dim=-1))


def contrastive_loss(image_feat: torch.Tensor, text_feat: torch.Tensor, caption_idx: torch.Tensor,
                     logit_scale: torch.Tensor) -> torch.Tensor:
    """CLIP loss over the batch's distinct captions; images sharing a caption are all positives.

    Short alt-texts repeat ("handwritten 7"); counting a repeat as a negative (plain CLIP loss) would push
    apart pairs that are equal by construction.
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
def zeroshot_accuracy(model, images: np.ndarray, labels: list[int], classnames: list[str], template: str,
                      batch_size: int = 256) -> float:
    """Top-1 accuracy (%) of ``template`` prompts; ``model`` is open_clip's CLIP or ``clip.CLIPBackbone``."""
    tokens = clip.tokenize([template.format(n) for n in classnames])
    text = F.normalize(model.encode_text(tokens).float(), dim=-1)
    correct = 0
    for start in range(0, len(labels), batch_size):
        feat = F.normalize(model.encode_image(to_tensor(images[start:start + batch_size])).float(), dim=-1)
        pred = (feat @ text.t()).argmax(-1)
        correct += int((pred == torch.tensor(labels[start:start + batch_size])).sum())
    return 100.0 * correct / len(labels)


def check_sample(key: str, per_class: int, seed: int = 0) -> tuple[np.ndarray, list[int]]:
    """``per_class`` images of every class of task ``key`` from the check stream (never on disk)."""
    task, spec = TASKS[key], WorldSpec(seed=seed)
    images, labels = [], []
    for label in range(len(task.classes)):
        first = 0 if task.capacity is None else task.capacity() - per_class  # digits: the tail of the pool
        images += render_class(task, spec, label, range(first, first + per_class), stream=STREAM_CHECK)
        labels += [label] * per_class
    return np.stack(images), labels


def zeroshot_report(model, per_class: int) -> dict[str, float]:
    """Zero-shot accuracy per downstream task (its own template and class names) on the check stream."""
    result = {}
    for key, task in TASKS.items():
        images, labels = check_sample(key, per_class)
        result[key] = round(zeroshot_accuracy(model, images, labels, task.classnames, task.template), 2)
    return result


def build_model(args: argparse.Namespace):
    return build_tiny_clip(
        "vit", embed_dim=args.embed_dim, image_size=args.image_size, vision_width=args.vision_width,
        vision_layers=args.vision_layers, patch_size=args.patch_size, vision_heads=args.vision_width // 64,
        text_width=args.text_width, text_layers=args.text_layers, text_heads=max(args.text_width // 64, 1),
        context_length=args.context_length,
    )


def lr_at(step: int, total: int, warmup: int, base_lr: float) -> float:
    """Linear warm-up, then cosine decay to zero."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    return 0.5 * base_lr * (1 + math.cos(math.pi * (step - warmup) / max(total - warmup, 1)))


def train(args: argparse.Namespace) -> dict:
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    model = build_model(args).train()
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("Model: %.2fM parameters; corpus rendered on the fly by %d worker(s)", n_params / 1e6, args.workers)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optim = torch.optim.AdamW([{"params": decay, "weight_decay": args.wd}, {"params": no_decay, "weight_decay": 0.0}],
                              lr=args.lr, betas=(0.9, 0.98), eps=1e-6)
    batches = CorpusBatches(args.seed, args.batch_size, args.steps, args.image_size, args.context_length)
    loader = DataLoader(batches, batch_size=None, shuffle=False, num_workers=args.workers,
                        prefetch_factor=4 if args.workers else None, persistent_workers=False)
    start = time.time()
    loss = torch.tensor(float("nan"))
    with tqdm(total=args.steps, desc="pretrain", mininterval=10) as bar:
        for step, (images, tokens) in enumerate(loader):
            for group in optim.param_groups:
                group["lr"] = lr_at(step, args.steps, args.warmup, args.lr)
            unique, caption_idx = torch.unique(tokens, dim=0, return_inverse=True)
            with autocast_context(args.prec, "cpu"):
                image_feat = model.encode_image(to_tensor(images.numpy()))
                text_feat = encode_tokens(model, unique)
            # the loss, the weights and AdamW's state stay fp32 under either precision
            loss = contrastive_loss(image_feat.float(), text_feat.float(), caption_idx, model.logit_scale)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
            bar.update(1)
            if args.save_every and (step + 1) % args.save_every == 0 and step + 1 < args.steps:
                save_openai_checkpoint(model, f"{args.out}.step{step + 1}", half=True)  # to watch a long run
            if step % args.log_every == 0 or step == args.steps - 1:
                logger.info("step %d/%d loss %.4f lr %.2e scale %.1f elapsed %.0fs", step, args.steps, loss.item(),
                            optim.param_groups[0]["lr"], model.logit_scale.exp().item(), time.time() - start)
    train_seconds = time.time() - start
    model.eval()
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    save_openai_checkpoint(model, args.out, half=True)

    # Measure on the checkpoint as users load it (fp16 weights upcast to fp32), not on the live model.
    accuracy = zeroshot_report(clip.load(args.out, device="cpu"), args.check_per_class)
    report = {
        "checkpoint": args.out,
        "bytes": osp.getsize(args.out),
        "parameters": n_params,
        "train_seconds": round(train_seconds, 1),
        "final_loss": round(loss.item(), 4),
        "zeroshot_check": accuracy,
        "zeroshot_sample": f"stream {STREAM_CHECK}, {args.check_per_class} per class",
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
    p.add_argument("--threads", type=int, default=2, help="torch threads; part of what makes a run bit-exact")
    p.add_argument("--workers", type=int, default=1, help="corpus-rendering processes (do not change the result)")
    p.add_argument("--prec", choices=("fp32", "bf16"), default="fp32",
                   help="bf16: the towers run under CPU bf16 autocast (fast where the CPU has AMX or avx512_bf16)")
    p.add_argument("--steps", type=int, default=1200)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--wd", type=float, default=0.1)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--check-per-class", type=int, default=20, help="zero-shot check images per class and task")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--embed-dim", type=int, default=128)
    p.add_argument("--vision-width", type=int, default=128)
    p.add_argument("--vision-layers", type=int, default=4)
    p.add_argument("--patch-size", type=int, default=4)
    p.add_argument("--text-width", type=int, default=128)
    p.add_argument("--text-layers", type=int, default=4)
    p.add_argument("--context-length", type=int, default=77, help="text positions (OpenAI's 77 by default)")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--save-every", type=int, default=0, help="also save OUT.stepN every N steps (0: never)")
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
