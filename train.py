"""Train or evaluate a prompt-learning trainer (the Dassl/CoOp command line).

Single process:  python train.py --root DATA --trainer CoOp --dataset-config-file ... --output-dir OUT
Several:         torchrun --nproc_per_node N train.py ...   (DDP: gloo on CPU, nccl on GPU)
Re-running the same command resumes from OUTPUT_DIR; trailing KEY VALUE pairs override the config.
"""
from __future__ import annotations

import argparse
import logging
import os.path as osp
import sys

import torch.distributed as dist
from yacs.config import CfgNode

import datasets  # noqa: F401  (registers every dataset loader)
import trainers  # noqa: F401  (registers every trainer)
from dassl.config import get_cfg_default, merge_from_file_checked, merge_from_list_checked
from dassl.engine import build_trainer
from dassl.engine.distributed import init_distributed_from_env, is_main_process
from dassl.engine.run_state import last_checkpoint_path
from dassl.utils import atomic_write_text, collect_env_info, set_random_seed, setup_logger

logger = logging.getLogger("train")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", type=str, default="", help="path to the dataset root (DATASET.ROOT)")
    parser.add_argument("--output-dir", type=str, default="", help="output directory (OUTPUT_DIR)")
    parser.add_argument(
        "--resume", type=str, default="", help="resume from this directory instead of OUTPUT_DIR (RESUME)"
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed (SEED); a negative one means none")
    parser.add_argument("--source-domains", type=str, nargs="+", help="source domains for DA/DG")
    parser.add_argument("--target-domains", type=str, nargs="+", help="target domains for DA/DG")
    parser.add_argument("--transforms", type=str, nargs="+", help="data augmentation methods")
    parser.add_argument("--config-file", type=str, default="", help="path to the trainer config file")
    parser.add_argument("--dataset-config-file", type=str, default="", help="path to the dataset config file")
    parser.add_argument("--trainer", type=str, default="", help="name of the trainer (TRAINER.NAME)")
    parser.add_argument("--backbone", type=str, default="", help="name of the backbone (MODEL.BACKBONE.NAME)")
    parser.add_argument("--head", type=str, default="", help="name of the head (MODEL.HEAD.NAME)")
    parser.add_argument("--eval-only", action="store_true", help="evaluation only")
    parser.add_argument(
        "--model-dir",
        type=str,
        default="",
        help="load the model from this directory for --eval-only (a run's OUTPUT_DIR)",
    )
    parser.add_argument(
        "--load-epoch",
        type=int,
        default=None,
        help="load model.pth.tar-<EPOCH> from --model-dir; when omitted, load the file named in "
        "MODEL_DIR/<model name>/checkpoint (the latest one saved)",
    )
    parser.add_argument("--no-train", action="store_true", help="build the trainer, then stop")
    parser.add_argument(
        "opts", default=None, nargs=argparse.REMAINDER, help="modify config options with KEY VALUE pairs"
    )
    return parser


def reset_cfg(cfg, args: argparse.Namespace) -> None:
    """Copy the command-line flags into the config (upstream's ``reset_cfg``)."""
    if args.root:
        cfg.DATASET.ROOT = args.root
    if args.output_dir:
        cfg.OUTPUT_DIR = args.output_dir
    if args.resume:
        cfg.RESUME = args.resume
    if args.seed is not None:  # upstream skipped --seed 0; any given seed is applied here
        cfg.SEED = args.seed
    if args.source_domains:
        cfg.DATASET.SOURCE_DOMAINS = args.source_domains
    if args.target_domains:
        cfg.DATASET.TARGET_DOMAINS = args.target_domains
    if args.transforms:
        cfg.INPUT.TRANSFORMS = args.transforms
    if args.trainer:
        cfg.TRAINER.NAME = args.trainer
    if args.backbone:
        cfg.MODEL.BACKBONE.NAME = args.backbone
    if args.head:
        cfg.MODEL.HEAD.NAME = args.head


def setup_cfg(args: argparse.Namespace):
    """Defaults (with every registered extension) <- dataset file <- trainer file <- flags <- KEY VALUE."""
    cfg = get_cfg_default()
    if args.dataset_config_file:
        merge_from_file_checked(cfg, args.dataset_config_file)
    if args.config_file:
        merge_from_file_checked(cfg, args.config_file)
    reset_cfg(cfg, args)
    merge_from_list_checked(cfg, args.opts or [])
    cfg.freeze()
    return cfg


def trained_final_model(model_dir: str, default: str) -> str:
    """TEST.FINAL_MODEL of the run that wrote ``model_dir`` (its config.yaml), else ``default``."""
    path = osp.join(model_dir, "config.yaml")
    if not osp.isfile(path):
        return default
    with open(path) as f:
        return CfgNode.load_cfg(f).get("TEST", {}).get("FINAL_MODEL", default)


def evaluate_saved_model(trainer, model_dir: str, load_epoch: int | None) -> float:
    """Load the requested checkpoint from ``model_dir`` and test it; never trains.

    Without ``load_epoch`` it loads the model the training run deployed: model-best for a best_val run,
    else the latest checkpoint, so base and new accuracies always come from the same model.
    """
    if load_epoch is not None and not model_dir:
        raise ValueError("--load-epoch needs --model-dir (the training run's output folder)")
    if model_dir and load_epoch is None:
        latest = trainer.latest_saved_epoch(model_dir)  # also checks that the folder holds a checkpoint
        best_val = trained_final_model(model_dir, trainer.cfg.TEST.FINAL_MODEL) == "best_val"
        load_epoch = None if best_val else latest
    trainer.load_model(model_dir, epoch=load_epoch)
    return trainer.test()


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    cfg = setup_cfg(args)
    init_distributed_from_env(bool(cfg.USE_CUDA))
    if cfg.SEED >= 0:
        set_random_seed(cfg.SEED)
    setup_logger(cfg.OUTPUT_DIR)
    if cfg.SEED >= 0:
        logger.info(f"Setting fixed seed: {cfg.SEED}")
    logger.info("Arguments:\n" + "\n".join(f"{k}: {v}" for k, v in sorted(vars(args).items())))
    logger.info("Config:\n" + cfg.dump())
    logger.info("Collecting env info ...\n" + collect_env_info())
    # A folder that already holds a run keeps its config.yaml: the engine resumes only when the configs
    # agree, and a refused run must not leave a config that does not describe the checkpoints beside it.
    if is_main_process() and not osp.exists(last_checkpoint_path(cfg.OUTPUT_DIR)):
        atomic_write_text(osp.join(cfg.OUTPUT_DIR, "config.yaml"), cfg.dump())

    try:
        trainer = build_trainer(cfg)
        if args.eval_only:
            evaluate_saved_model(trainer, args.model_dir, args.load_epoch)
        elif not args.no_train:
            trainer.train()
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
