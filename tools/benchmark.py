"""Benchmark prompt-learning trainers through the real code path: one JSON line per trainer.

Each trainer is built with ``build_trainer`` from ``get_cfg_default()`` + its ``configs/trainers/<T>/vit_b16.yaml``
on a generated CoOp-layout dataset (Describable Textures layout, N classes of single-token names), then:

- ``train_step_s``: median seconds of ``trainer.forward_backward(batch)`` (the engine's whole step: forward,
  losses, backward, optimizer step) on one fixed batch drawn from the real train loader before timing
  (its views are data-pipeline work, so data loading is not timed);
- ``image_tower_s``: median seconds of the image-tower work of that step: one pass over its view images,
  forward + backward to the model's vision prompts when it learns some (``vision_prompts``), else no-grad, and
  a no-grad unprompted pass over its ``teacher_views`` (a frozen teacher, e.g. PromptSRC's);
- ``text_tower_s``: median seconds of forward + backward of the text tower over that step's prompts, cut to the
  class prompts' length, with the model's deep text prompts, through the same ``encode_prompts``; 0 when the
  class text features are fixed (computed once per run, as targets computed once are); step, image and text
  runs alternate, so load from other processes hits all three alike;
- ``eval_s_per_image``: median seconds per image of ``trainer.model_inference`` on a batch of 8 test images;
- ``peak_rss_mb_train`` / ``peak_rss_mb_eval``: peak resident memory of each phase; training and evaluation
  each run in their own process (``--phase``), so the two are separate (also as ``peak_rss_{train,eval}_mb``);
- ``rss_file_mb_train`` / ``rss_file_mb_eval``: the file-backed part of the resident memory at the end of each
  phase (``RssFile``: mapped library pages, mostly torch's); it is counted in the peaks and varies from run
  to run with the page cache, so two peaks are comparable only together with it (null off Linux);
- ``epoch_ratio`` (``--end-to-end``): a whole epoch through the real DataLoader (decode, views in the
  config's workers or, with none, in this process, collate, step) on larger JPEGs, divided by (its steps
  x ``train_step_s``); null otherwise.

The fixed batch is moved to the device before timing (host-to-device copies are not timed); ``*_cpu_s`` keys
give process CPU seconds next to the wall ones. ``necessary_s`` = image + text tower, both under the trainer's
precision (``prec``: the resolved one; ``--precision auto`` resolves as ``PREC auto`` does);
``step_over_necessary`` = train_step_s / necessary_s. ``cpu_flags`` lists the CPU features that decide the
kernels (AVX-512, bf16, AMX), ``cpu_model`` the CPU, ``load_avg_*`` the load around each phase.
With ``--memory-budget-gb`` (``TRAIN.MEMORY_BUDGET_GB``) the necessary text work is run in the same chunks the
step uses, each forward + backward once (no recomputation), so the ratio shows what checkpointing costs.

Every registered trainer can be benchmarked (``--trainer all``): the tool reads only the trainer's
``CFG_NODE`` (for PREC) and the model contract (``step_work``, ``learned_prompts``, ``clip``, ``class_prompts``,
``prompt_learner.ctx``), so each method declares its own necessary work; an evaluation-only trainer
(``EVAL_ONLY``) runs the eval phase only.

Examples:
    python tools/benchmark.py --trainer GOPro --classes 10 --batch-size 4 --steps 4 --warmup 1 --json
    python tools/benchmark.py --trainer all --json
    python tools/benchmark.py --trainer GOPro --phases eval --eval-classes 1000 --steps 1 --warmup 0 --json
    python tools/benchmark.py --device cuda --precision bf16 --trainer all --json
    python tools/benchmark.py --trainer GOPro --precision auto --end-to-end --json
    python tools/benchmark.py --trainer CoCoOp --classes 1000 --phases train --memory-budget-gb 12 --json

Without ``--backbone`` the backbone is a random CLIP with OpenAI ViT-B/16's dimensions built in memory;
``--backbone`` takes anything ``clip.load`` takes (an OpenAI name with its weights cached, or a checkpoint path).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import os.path as osp
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

logger = logging.getLogger("benchmark")

RANDOM_BACKBONE = "random ViT-B/16"
PHASES = ("train", "eval")
DATASET_NAME = "DescribableTextures"  # the generated tree follows its CoOp layout
DATASET_DIR, IMAGE_DIR, SPLIT_FILE = "dtd", "images", "split_zhou_DescribableTextures.json"
SMALL_IMAGE_PX, EPOCH_IMAGE_PX = 48, 320  # generated JPEG side: timing a fixed batch / whole epochs (decode)
# CPU features reported with every record: what decides torch's CPU kernels for fp32 and bf16.
REPORTED_CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8")


def registered_trainers() -> dict[str, type]:
    """Every trainer the ``trainers`` package registers, by name."""
    import trainers  # noqa: F401  (registers the trainers)
    from dassl.engine import TRAINER_REGISTRY

    return {name: TRAINER_REGISTRY.get(name) for name in TRAINER_REGISTRY.registered_names()}


# ---------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="\n".join(__doc__.splitlines()[2:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--backbone", default="", help="clip.load name or checkpoint path; default: a random "
                        "ViT-B/16-dims CLIP built in memory")
    parser.add_argument("--trainer", nargs="+", default=["GOPro"],
                        help="trainer names, or 'all' (every registered trainer)")
    parser.add_argument("--classes", type=int, default=10, help="number of classes of the training dataset")
    parser.add_argument("--batch-size", type=int, default=4, help="training batch size (TRAIN_X.BATCH_SIZE)")
    parser.add_argument("--steps", type=int, default=4, help="timed training steps (and evaluation repeats)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps (and eval repeats) first")
    parser.add_argument("--eval-classes", type=int, default=None, help="number of classes for the evaluation "
                        "phase (default: --classes); e.g. 1000 for the ImageNet-sized memory check")
    parser.add_argument("--eval-images", type=int, default=8, help="images per evaluation batch")
    parser.add_argument("--name-tokens", type=int, default=1, help="BPE tokens per generated class name")
    parser.add_argument("--phases", default="train,eval", help="comma-separated phases to run: train, eval")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (the engine picks which GPU)")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "fp16", "amp", "bf16"),
                        help="TRAINER.<T>.PREC (default auto, as the trainers: bf16 where fast, else fp32)")
    parser.add_argument("--memory-budget-gb", type=float, default=None,
                        help="TRAIN.MEMORY_BUDGET_GB (default: unset, no limit)")
    parser.add_argument("--end-to-end", action="store_true", help="also time whole epochs through the real "
                        "DataLoader and report epoch_ratio")
    parser.add_argument("--epoch-steps", type=int, default=8, help="steps per end-to-end epoch")
    parser.add_argument("--workers", type=int, default=None, help="DATALOADER.NUM_WORKERS for --end-to-end "
                        "(default: the trainer config's)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--seed", type=int, default=0, help="seed for the random backbone, data and learner")
    parser.add_argument("--config-file", default="", help="trainer config file (default: "
                        "configs/trainers/<T>/vit_b16.yaml)")
    parser.add_argument("--profile", action="store_true", help="also profile one step / one evaluation with "
                        "torch.profiler and print the top operators to stderr")
    parser.add_argument("--json", action="store_true", help="print only the JSON lines on stdout")
    parser.add_argument("--verbose", action="store_true", help="show the engine's INFO logs")
    parser.add_argument("--table", metavar="JSONL", default=None, help="print the records of a file of JSON lines "
                        "(this tool's output) as one Markdown table per precision, and exit")
    parser.add_argument("--phase", choices=PHASES, default=None, help="internal: run one phase of one trainer "
                        "in this process and print its JSON (the parent runs each phase in a fresh process)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides as KEY VALUE pairs")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    registered = registered_trainers()
    names = tuple(registered) if "all" in args.trainer else tuple(args.trainer)
    unknown = [n for n in names if n not in registered]
    if unknown:
        raise SystemExit(f"benchmark: unknown trainer(s) {unknown}; choose from {', '.join(registered)} or 'all'")
    args.trainer = list(names)
    args.phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    if not args.phases or any(p not in PHASES for p in args.phases):
        raise SystemExit(f"benchmark: --phases must list some of {', '.join(PHASES)}")
    if args.eval_classes is None:
        args.eval_classes = args.classes
    if min(args.classes, args.eval_classes, args.batch_size, args.steps, args.eval_images, args.name_tokens,
           args.epoch_steps) < 1:
        raise SystemExit("benchmark: --classes, --eval-classes, --batch-size, --steps, --eval-images, "
                         "--name-tokens and --epoch-steps must be >= 1")
    if args.memory_budget_gb is not None and args.memory_budget_gb <= 0:
        raise SystemExit("benchmark: --memory-budget-gb must be > 0")
    return args


# ---------------------------------------------------------------- measuring


def peak_rss_mb() -> float:
    """Peak resident set size of this process (VmHWM), in MiB."""
    value = _proc_status_kb("VmHWM")
    if value is None:  # not Linux /proc: ru_maxrss is in KiB on Linux, bytes on macOS
        value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        value = value / 1024 if sys.platform == "darwin" else value
    return value / 1024


def current_rss_mb(field: str = "VmRSS") -> float | None:
    """This process's resident memory now (``field``: VmRSS, or RssFile / RssAnon for a part), in MiB."""
    value = _proc_status_kb(field)
    return None if value is None else round(value / 1024, 1)


def _proc_status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine() -> dict:
    """The CPU model and the reported feature flags it has (from /proc/cpuinfo; empty elsewhere)."""
    from dassl.engine.precision import cpu_flags

    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    flags = cpu_flags()
    return {"cpu_model": model, "cpu_flags": [f for f in REPORTED_CPU_FLAGS if f in flags],
            "cpu_count": os.cpu_count()}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> tuple[float, float]:
    """(wall, process CPU) seconds of ``fn()``, waiting for queued device work before and after.

    On a shared CPU the process CPU time (all threads) is far less disturbed by other jobs than wall time.
    """
    synchronize(device)
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    synchronize(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def profile_once(fn: Callable[[], object], device: torch.device, title: str) -> None:
    """Run ``fn`` once under torch.profiler and print the operators that took the most time to stderr."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        fn()
        synchronize(device)
    sort_by = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    table = prof.key_averages().table(sort_by=sort_by, row_limit=25)
    print(f"\n=== profile: {title} ===\n{table}", file=sys.stderr)


def median(values: list[float]) -> float:
    return round(statistics.median(values), 4)


# ---------------------------------------------------------------- generated dataset


def class_names(n: int, tokens_per_name: int) -> list[str]:
    """``n`` distinct names of ``tokens_per_name`` words, each one BPE token (so the cut length is known)."""
    from open_clip.tokenizer import SimpleTokenizer

    import clip

    vocab = SimpleTokenizer().encoder  # BPE string -> id; whole words end in "</w>"
    words = [w[: -len("</w>")] for w, _ in sorted(vocab.items(), key=lambda kv: kv[1]) if w.endswith("</w>")]
    words = [w for w in words if w.isascii() and w.isalpha() and len(w) >= 4]
    needed = n * tokens_per_name
    step = max(256, 2 * needed)  # words tokenised at a time: BPE in Python is slow, few are needed
    picked: list[str] = []
    for start in range(0, len(words), step):
        chunk = words[start : start + step]
        # "<word>." must be SOT, word, ".", EOT: the EOT (largest id) sits at position 3.
        eot = clip.tokenize([f"{w}." for w in chunk], context_length=16).argmax(dim=-1)
        picked += [w for w, pos in zip(chunk, eot.tolist(), strict=True) if pos == 3]
        if len(picked) >= needed:
            break
    if len(picked) < needed:
        raise ValueError(f"only {len(picked)} single-token words for {needed} name tokens")
    return [" ".join(picked[i * tokens_per_name : (i + 1) * tokens_per_name]) for i in range(n)]


def write_dataset(root: str, names: list[str], train_per_class: int, test_per_class: int, seed: int,
                  image_px: int = SMALL_IMAGE_PX) -> None:
    """A Describable-Textures-layout tree: one folder of noise JPEGs per class and the split JSON."""
    rng = np.random.default_rng(seed)
    per_class = max(train_per_class, test_per_class)
    split: dict[str, list] = {"train": [], "val": [], "test": []}
    for label, name in enumerate(names):
        folder = f"class_{label:05d}"
        os.makedirs(osp.join(root, DATASET_DIR, IMAGE_DIR, folder), exist_ok=True)
        files = []
        for i in range(per_class):
            rel = f"{folder}/{i}.jpg"
            pixels = rng.integers(0, 256, (image_px, image_px, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(osp.join(root, DATASET_DIR, IMAGE_DIR, rel), quality=85)
            files.append(rel)
        split["train"] += [[rel, label, name] for rel in files[:train_per_class]]
        split["val"].append([files[0], label, name])
        split["test"] += [[rel, label, name] for rel in files[:test_per_class]]
    with open(osp.join(root, DATASET_DIR, SPLIT_FILE), "w") as f:
        json.dump(split, f)


# ---------------------------------------------------------------- building the trainer


def build_backbone(spec: str, seed: int, matmul_dtype: torch.dtype | None = None):
    """A frozen CPU CLIPBackbone: random ViT-B/16 dims in memory (built in fp32), or ``clip.load(spec)``.

    ``matmul_dtype`` is what a bf16 run's loading gives its matrix weights; a checkpoint file is then read
    as the trainers read it, so its peak is the real one (the random model exists in fp32 first).
    """
    import clip
    from clip.tiny import random_vit_b16

    if not spec:
        torch.manual_seed(seed)
        backbone = clip.CLIPBackbone(random_vit_b16())
        if matmul_dtype is not None:
            backbone.store_matmul_weights(matmul_dtype)
        return backbone
    return clip.load(spec, device="cpu", precision="fp32", matmul_dtype=matmul_dtype)


@contextlib.contextmanager
def serving_backbone(backbone) -> Iterator[None]:
    """While open, ``clip.load`` (which the trainers' ``load_clip`` calls) returns ``backbone``.

    It is moved to the requested device and weight dtype exactly as ``clip.load`` would; this lets the
    trainers build through their own code path around a model that exists only in memory, and avoids
    loading a checkpoint twice (once here to read its input size).
    """
    import clip
    from clip.loading import resolve_dtype

    original = clip.load

    def load(name_or_path: str, device: str | torch.device = "cpu", precision: str = "fp32",
             matmul_dtype: torch.dtype | None = None, cpu_fallback: bool = True):
        logger.info("serving the benchmark backbone for MODEL.BACKBONE.NAME=%r (%s on %s)", name_or_path,
                    precision, device)
        if backbone.matmul_dtype != matmul_dtype:
            raise SystemExit(f"benchmark: the backbone was built with matrix weights in {backbone.matmul_dtype}, "
                             f"the trainer asks for {matmul_dtype} (does it have a TRAINER.<node>.PREC key?)")
        dtype = resolve_dtype(precision, device, cpu_fallback)
        # fp32 is what the backbone holds, except its matrix weights in a bf16 run: leave those as they are.
        return backbone.to(device=device) if dtype == torch.float32 else backbone.to(device=device, dtype=dtype)

    clip.load = load
    try:
        yield
    finally:
        clip.load = original


def build_cfg(args: argparse.Namespace, trainer_name: str, data_root: str, output_dir: str, image_size: int):
    """Defaults + the trainer's ViT-B/16 config + the benchmark's dataset, sizes, device and precision."""
    from dassl.config import get_cfg_default, merge_from_file_checked, merge_from_list_checked
    from dassl.engine import trainer_config_node

    cfg = get_cfg_default()
    config_file = args.config_file or str(REPO / "configs" / "trainers" / trainer_name / "vit_b16.yaml")
    if args.config_file or osp.isfile(config_file):  # a trainer without a ViT-B/16 config runs on the defaults
        merge_from_file_checked(cfg, config_file)
    cfg.TRAINER.NAME = trainer_name
    node = trainer_config_node(trainer_name, registered_trainers()[trainer_name])
    if node in cfg.TRAINER and "PREC" in cfg.TRAINER[node]:
        cfg.TRAINER[node].PREC = args.precision
    cfg.TRAIN.MEMORY_BUDGET_GB = args.memory_budget_gb
    cfg.MODEL.BACKBONE.NAME = args.backbone or RANDOM_BACKBONE
    cfg.DATASET.NAME = DATASET_NAME
    cfg.DATASET.ROOT = data_root
    cfg.DATASET.NUM_SHOTS = -1
    cfg.INPUT.SIZE = (image_size, image_size)
    cfg.DATALOADER.TRAIN_X.BATCH_SIZE = args.batch_size
    cfg.DATALOADER.TEST.BATCH_SIZE = args.eval_images
    if not args.end_to_end:  # one batch is drawn before timing; workers would only cost start-up
        cfg.DATALOADER.NUM_WORKERS = 0
    elif args.workers is not None:
        cfg.DATALOADER.NUM_WORKERS = args.workers
    cfg.USE_CUDA = torch.device(args.device).type == "cuda"
    cfg.OUTPUT_DIR = output_dir
    cfg.SEED = args.seed
    merge_from_list_checked(cfg, args.opts or [])
    cfg.freeze()
    return cfg


def build_benchmark_trainer(args: argparse.Namespace, trainer_name: str, n_classes: int, workdir: str):
    """(trainer, {build_s, rss_after_build_mb}): data, config, ``build_trainer`` around the benchmark backbone."""
    import datasets  # noqa: F401  (registers the dataset loaders)
    import trainers  # noqa: F401  (registers the trainers)
    from dassl.engine import build_trainer
    from dassl.engine.precision import choose_precision
    from dassl.utils import set_random_seed
    from trainers.backbone_loading import matmul_dtype

    start = time.perf_counter()
    names = class_names(n_classes, args.name_tokens)
    data_root = osp.join(workdir, "data")
    train_images = args.batch_size * (args.epoch_steps if args.end_to_end else 1)
    write_dataset(data_root, names, train_per_class=math.ceil(train_images / n_classes),
                  test_per_class=math.ceil(args.eval_images / n_classes), seed=args.seed,
                  image_px=EPOCH_IMAGE_PX if args.end_to_end else SMALL_IMAGE_PX)
    resolved = choose_precision(args.precision, args.device)[0]
    backbone = build_backbone(args.backbone, args.seed, matmul_dtype(resolved))
    cfg = build_cfg(args, trainer_name, data_root, osp.join(workdir, "output"), backbone.image_size)
    set_random_seed(args.seed)
    with serving_backbone(backbone):
        trainer = build_trainer(cfg)
    if trainer.device.type != torch.device(args.device).type:
        raise SystemExit(f"benchmark: asked for --device {args.device} but the trainer runs on {trainer.device} "
                         "(is CUDA available?)")
    return trainer, {"build_s": round(time.perf_counter() - start, 2),
                     "rss_after_build_mb": round(current_rss_mb() or peak_rss_mb(), 1)}


def on_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


# ---------------------------------------------------------------- the necessary work of one step


@dataclass(frozen=True)
class StepWork:
    """What one training step must compute: image-tower views and prompts (instances x classes)."""

    view_keys: tuple[str, ...]  # batch keys whose images go through the image tower
    with_layers: bool  # the trainer reads every layer's tokens (GOPro)
    instances: int  # contexts per step; each is paired with every class (0: fixed class text features)
    teacher_views: tuple[str, ...] = ()  # views that also go through the unprompted tower, no grad

    def n_prompts(self, n_classes: int) -> int:
        return self.instances * n_classes


def step_work(trainer, batch_size: int) -> StepWork:
    """The necessary work of one step of ``trainer``, as its model describes it (``PromptModel.step_work``)."""
    work = trainer.model.step_work(batch_size)
    return StepWork(tuple(work["view_keys"]), work["with_layers"], work["instances"],
                    tuple(work.get("teacher_views", ())))


def image_tower_fn(trainer, work: StepWork, batch: dict) -> Callable[[], object]:
    """The step's image-tower work: one pass over all its view images as one batch, forward + backward to the
    model's vision prompts when it has some (else no-grad), and the unprompted no-grad pass over its teacher views."""
    model = trainer.model
    backbone = model.clip
    images = torch.cat([batch[k] for k in work.view_keys])
    teacher_images = torch.cat([batch[k] for k in work.teacher_views]) if work.teacher_views else None
    encode = backbone.encode_image_with_layers if work.with_layers else backbone.encode_image

    def run() -> object:
        with trainer.autocast():
            _, prompts = model.learned_prompts()  # built inside the step too (MaPLe's couplings)
            if prompts is None:
                with torch.no_grad():
                    encode(images)
            else:
                output = encode(images, prompts)
                features = output[0] if work.with_layers else output
                # Gradients reach the prompts only: the tower's weights are frozen, as in the step.
                torch.autograd.grad(features.float().sum(), [prompts.shallow, *prompts.deep])
            if teacher_images is not None:
                with torch.no_grad():
                    backbone.encode_image(teacher_images)

    return run


def text_chunk(trainer, work: StepWork) -> int | None:
    """Prompts per text pass: all of them, or the chunk the model's memory budget plans for the step."""
    if not work.instances:
        return None
    prompts = trainer.model.class_prompts
    n_prompts = work.n_prompts(prompts.n_cls)
    text_pass = getattr(trainer.model, "text_pass", None)
    plan = text_pass.plan(trainer.model.clip, n_prompts, prompts.tokens.shape[1]) if text_pass else None
    return plan.chunk if plan is not None else n_prompts


def text_tower_fn(trainer, work: StepWork) -> Callable[[], object] | None:
    """Forward + backward (to the context and deep prompts) of the text tower over the step's prompts, at the
    cut length; None when the step has no text work (fixed class text features).

    Under a memory budget each of the step's chunks runs forward + backward once, so memory stays bounded.
    """
    if not work.instances:
        return None
    prompts = trainer.model.class_prompts
    backbone = trainer.model.clip
    ctx0 = trainer.model.prompt_learner.ctx.detach()
    deep0 = [p.detach() for p in trainer.model.learned_prompts()[0]]
    n_cls = prompts.n_cls
    n_prompts = work.n_prompts(n_cls)
    chunk = text_chunk(trainer, work)

    def run() -> object:
        ctx = ctx0.clone().requires_grad_(True)
        deep = [p.clone().requires_grad_(True) for p in deep0]
        for start in range(0, n_prompts, chunk):
            prompt_idx = torch.arange(start, min(start + chunk, n_prompts), device=prompts.tokens.device)
            class_idx = prompt_idx % n_cls
            # one context shared by every prompt, or class-specific contexts [n_cls, n_ctx, D]
            per_prompt = ctx.unsqueeze(0).expand(len(prompt_idx), -1, -1) if ctx.dim() == 2 else ctx[class_idx]
            with trainer.autocast():
                features = backbone.encode_prompts(*prompts.embed(per_prompt, class_idx), deep_prompts=deep)
            features.float().sum().backward()
        return ctx.grad

    return run


def time_epoch(trainer, device: torch.device) -> tuple[float, int]:
    """(seconds, steps) of one whole epoch: the real train loader (workers, decode, views, collate) and steps."""
    trainer.set_model_mode("train")
    synchronize(device)
    start, steps = time.perf_counter(), 0
    for batch in trainer.train_loader_x:
        trainer.forward_backward(on_device(batch, device))
        steps += 1
    synchronize(device)
    return time.perf_counter() - start, steps


# ---------------------------------------------------------------- phases


def phase_header(args: argparse.Namespace, trainer, trainer_name: str, phase: str, build: dict) -> dict:
    """Keys both phases report; the per-phase ones carry the phase in their name."""
    return {
        "trainer": trainer_name,
        "device": str(trainer.device),
        "prec": trainer.precision,
        "precision": trainer.precision,
        "precision_requested": trainer.precision_requested,
        "memory_budget_gb": args.memory_budget_gb,
        "threads": torch.get_num_threads(),
        "backbone": args.backbone or RANDOM_BACKBONE,
        f"build_{phase}_s": build["build_s"],
        f"rss_after_build_{phase}_mb": build["rss_after_build_mb"],
    }


def run_train_phase(args: argparse.Namespace, trainer_name: str, workdir: str) -> dict:
    """Time the engine's step and the two towers on one fixed batch; peak RSS of this process."""
    load_start = load_average()
    trainer, build = build_benchmark_trainer(args, trainer_name, args.classes, workdir)
    device = trainer.device
    batch = on_device(next(iter(trainer.train_loader_x)), device)
    work = step_work(trainer, args.batch_size)
    trainer.set_model_mode("train")
    runs = {
        "train_step": lambda: trainer.forward_backward(batch),
        "image_tower": image_tower_fn(trainer, work, batch),
        "text_tower": text_tower_fn(trainer, work),
    }
    runs = {name: fn for name, fn in runs.items() if fn is not None}
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    for step in range(args.warmup + args.steps):
        for name, fn in runs.items():  # interleaved, so load from other processes hits all three alike
            seconds = timed(fn, device)
            if step >= args.warmup:
                times[name].append(seconds)
        logger.info("step %d/%d (wall, cpu): %s", step + 1, args.warmup + args.steps,
                    {k: [round(x, 3) for x in v[-1]] for k, v in times.items() if v})
    if args.profile:
        profile_once(runs["train_step"], device, f"{trainer_name} train step")
    epoch = {}
    if args.end_to_end:
        time_epoch(trainer, device)  # untimed: first-touch costs of the loader and the page cache
        epoch_s, epoch_steps = time_epoch(trainer, device)
        step_s = statistics.median([wall for wall, _ in times["train_step"]])
        epoch = {"epoch_s": round(epoch_s, 3), "epoch_steps": epoch_steps,
                 "epoch_ratio": round(epoch_s / (epoch_steps * step_s), 3),
                 "num_workers": trainer.cfg.DATALOADER.NUM_WORKERS, "epoch_image_px": EPOCH_IMAGE_PX}
    result = phase_header(args, trainer, trainer_name, "train", build)
    class_prompts = trainer.model.class_prompts if work.instances else None
    result.update({
        "classes": args.classes,
        "batch_size": args.batch_size,
        "text_tower_s": 0.0, "text_tower_cpu_s": 0.0,  # no text work: fixed class text features
        **{f"{name}_s": median([wall for wall, _ in runs_]) for name, runs_ in times.items()},
        **{f"{name}_cpu_s": median([cpu for _, cpu in runs_]) for name, runs_ in times.items()},
        "train_step_all_s": [round(wall, 3) for wall, _ in times["train_step"]],
        "n_view_images": len(work.view_keys) * args.batch_size,
        "vision_prompts": trainer.model.learned_prompts()[1] is not None,
        "n_teacher_images": len(work.teacher_views) * args.batch_size,
        "n_prompts": 0 if class_prompts is None else work.n_prompts(class_prompts.n_cls),
        "text_chunk": text_chunk(trainer, work),
        "cut_len": None if class_prompts is None else int(class_prompts.tokens.shape[1]),
        "n_ctx": None if class_prompts is None else int(class_prompts.n_ctx),
        "peak_rss_train_mb": round(peak_rss_mb(), 1),
        "rss_file_mb_train": current_rss_mb("RssFile"),
        "load_avg_train": [load_start, load_average()],
        **epoch,
    })
    if device.type == "cuda":
        result["peak_cuda_train_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return result


def run_eval_phase(args: argparse.Namespace, trainer_name: str, workdir: str) -> dict:
    """Time the trainer's test-time inference on one batch of test images; peak RSS of this process."""
    load_start = load_average()
    trainer, build = build_benchmark_trainer(args, trainer_name, args.eval_classes, workdir)
    device = trainer.device
    images = next(iter(trainer.test_loader))["img"][: args.eval_images].to(device)
    trainer.set_model_mode("eval")

    def run() -> object:
        with torch.no_grad():
            return trainer.model_inference(images)

    times = []
    for repeat in range(args.warmup + args.steps):
        seconds = timed(run, device)
        if repeat >= args.warmup:
            times.append(seconds)
    n = len(images)
    if args.profile:
        profile_once(run, device, f"{trainer_name} evaluation of {len(images)} images")
    result = phase_header(args, trainer, trainer_name, "eval", build)
    result.update({
        "eval_classes": args.eval_classes,
        "eval_images": len(images),
        "eval_s_per_image": median([wall / n for wall, _ in times]),
        "eval_cpu_s_per_image": median([cpu / n for _, cpu in times]),
        "peak_rss_eval_mb": round(peak_rss_mb(), 1),
        "rss_file_mb_eval": current_rss_mb("RssFile"),
        "load_avg_eval": [load_start, load_average()],
    })
    if device.type == "cuda":
        result["peak_cuda_eval_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return result


def run_phase_here(args: argparse.Namespace) -> dict:
    """Run ``args.phase`` for the single trainer in ``args.trainer`` in this process."""
    torch.set_num_threads(args.threads)
    phase = run_train_phase if args.phase == "train" else run_eval_phase
    with tempfile.TemporaryDirectory(prefix="benchmark-") as workdir:
        return phase(args, args.trainer[0], workdir)


def child_command(args: argparse.Namespace, trainer_name: str, phase: str) -> list[str]:
    """The command line that runs one phase of one trainer in a fresh process."""
    command = [
        sys.executable, str(Path(__file__).resolve()), "--phase", phase, "--trainer", trainer_name,
        "--classes", str(args.classes), "--eval-classes", str(args.eval_classes),
        "--batch-size", str(args.batch_size), "--steps", str(args.steps), "--warmup", str(args.warmup),
        "--eval-images", str(args.eval_images), "--name-tokens", str(args.name_tokens),
        "--device", args.device, "--precision", args.precision, "--threads", str(args.threads),
        "--seed", str(args.seed), "--epoch-steps", str(args.epoch_steps),
    ]
    if args.memory_budget_gb is not None:
        command += ["--memory-budget-gb", str(args.memory_budget_gb)]
    if args.workers is not None:
        command += ["--workers", str(args.workers)]
    if args.backbone:
        command += ["--backbone", args.backbone]
    if args.config_file:
        command += ["--config-file", args.config_file]
    flags = (("--profile", args.profile), ("--verbose", args.verbose), ("--end-to-end", args.end_to_end))
    command += [flag for flag, on in flags if on]
    return command + list(args.opts or [])


def run_phase_in_child(args: argparse.Namespace, trainer_name: str, phase: str) -> dict:
    """Run one phase in a fresh process (so its peak RSS is its own) and read the JSON it prints last."""
    proc = subprocess.run(child_command(args, trainer_name, phase), stdout=subprocess.PIPE, text=True,
                          cwd=str(REPO), check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{trainer_name} {phase} phase failed (exit code {proc.returncode}); see stderr above")
    return json.loads(lines[-1])


def merge_phases(results: dict[str, dict]) -> dict:
    """One record per trainer: the train phase's keys, then the eval phase's, and the derived ratios.

    Every key the module docstring lists is present; a figure the run did not measure is null, never a guess.
    """
    merged: dict = machine()
    for phase in PHASES:
        for key, value in results.get(phase, {}).items():
            merged.setdefault(key, value)
    if "train" in results:
        for suffix in ("s", "cpu_s"):
            necessary = merged[f"image_tower_{suffix}"] + merged[f"text_tower_{suffix}"]
            merged[f"necessary_{suffix}"] = round(necessary, 4)
            ratio_key = "step_over_necessary" + ("_cpu" if suffix == "cpu_s" else "")
            merged[ratio_key] = round(merged[f"train_step_{suffix}"] / max(necessary, 1e-9), 3)
        merged["peak_rss_mb"] = merged["peak_rss_train_mb"]
        merged["peak_rss_mb_train"] = merged["peak_rss_train_mb"]
    if "eval" in results:
        merged["peak_rss_mb_eval"] = merged["peak_rss_eval_mb"]
    merged.setdefault("classes", merged.get("eval_classes"))
    for key in ("train_step_s", "necessary_s", "step_over_necessary", "eval_s_per_image", "peak_rss_mb_train",
                "peak_rss_mb_eval", "epoch_ratio"):
        merged.setdefault(key, None)
    return merged


# ---------------------------------------------------------------- tables

TABLE_COLUMNS = (  # (header, record key, format)
    ("trainer", "trainer", "{}"),
    ("classes", "classes", "{}"),
    ("budget GB", "memory_budget_gb", "{:g}"),
    ("train step s", "train_step_s", "{:.3f}"),
    ("necessary s", "necessary_s", "{:.3f}"),
    ("step ÷ necessary", "step_over_necessary", "{:.2f}"),
    ("eval s / image", "eval_s_per_image", "{:.3f}"),
    ("peak RSS train MB", "peak_rss_mb_train", "{:.0f}"),
    ("peak RSS eval MB", "peak_rss_mb_eval", "{:.0f}"),
    ("peak GPU train MB", "peak_cuda_train_mb", "{:.0f}"),
    ("peak GPU eval MB", "peak_cuda_eval_mb", "{:.0f}"),
    ("epoch ratio", "epoch_ratio", "{:.2f}"),
    ("load (1 min)", "load_avg_train", "{}"),
)


def markdown_tables(records: list[dict]) -> str:
    """One Markdown table per resolved precision; a column nobody measured is left out, a missing figure is '—'."""
    out = []
    for prec in dict.fromkeys(r.get("prec") for r in records):
        rows = [r for r in records if r.get("prec") == prec]
        columns = [c for c in TABLE_COLUMNS if any(r.get(c[1]) is not None for r in rows)]
        first = rows[0]
        out.append(f"{prec} on {first.get('device')}, {first.get('threads')} threads, "
                   f"{first.get('cpu_model', '')} ({', '.join(first.get('cpu_flags', []))})\n")
        out.append("| " + " | ".join(c[0] for c in columns) + " |")
        out.append("|" + "---|" * len(columns))
        for r in rows:
            cells = []
            for _, key, fmt in columns:
                value = r.get(key)
                if key == "load_avg_train":
                    value = (value or r.get("load_avg_eval") or [[None]])[0][0]
                cells.append("—" if value is None else fmt.format(value))
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


# ---------------------------------------------------------------- entry point


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.table:
        with open(args.table) as f:
            print(markdown_tables([json.loads(line) for line in f if line.startswith("{")]))
        return 0
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("benchmark: --device cuda but torch.cuda.is_available() is False")
    if args.phase is not None:
        if len(args.trainer) != 1:
            raise SystemExit("benchmark: --phase runs exactly one trainer")
        print(json.dumps(run_phase_here(args)), flush=True)
        return 0
    failed = 0
    registered = registered_trainers()
    for name in args.trainer:
        phases = args.phases
        if getattr(registered[name], "EVAL_ONLY", False):
            if "eval" not in phases:
                logger.warning("%s is evaluation-only; it has no training step to time", name)
                continue
            phases = ["eval"]
        try:
            results = {phase: run_phase_in_child(args, name, phase) for phase in phases}
        except RuntimeError as err:
            logger.error("%s", err)
            failed += 1
            continue
        record = merge_phases(results)
        print(json.dumps(record) if args.json else json.dumps(record, indent=2), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
