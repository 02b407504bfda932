"""One run of the command line in its output folder: processes, the folder lock, logging, then train or evaluate.

``train.py`` parses the arguments into a config and calls ``run``; everything after that lives in the engine.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os.path as osp
from collections.abc import Sequence

from dassl.utils import (
    FolderLock,
    atomic_write_text,
    collect_env_info,
    give_log_back_to_earlier_attempt,
    remove_stale_temp_files,
    set_random_seed,
    setup_logger,
)

from .distributed import init_distributed_from_env, is_main_process
from .evaluate import evaluate_saved_model
from .resume import check_resumable_config
from .run_state import CONFIG_RECORD, ConfigMismatchError, DataMismatchError, holds_checkpoints

__all__ = ["run", "run_locked"]

logger = logging.getLogger(__name__)


def run(args: argparse.Namespace, cfg, warnings: Sequence[str] = ()) -> None:
    """Start torch.distributed when launched by torchrun, lock OUTPUT_DIR (rank 0), then ``run_locked``."""
    import torch.distributed as dist

    init_distributed_from_env(bool(cfg.USE_CUDA))
    try:
        with FolderLock(cfg.OUTPUT_DIR) if is_main_process() else contextlib.nullcontext():
            run_locked(args, cfg, warnings)
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def run_locked(args: argparse.Namespace, cfg, warnings: Sequence[str] = ()) -> None:
    """Everything that writes into OUTPUT_DIR; the caller holds the folder's lock (rank 0).

    ``args`` are train.py's (``eval_only``, ``no_train``, ``model_dir``, ``load_epoch``); ``warnings`` are
    logged once the log file is open.
    """
    from dassl.engine import build_trainer  # looked up per run: the package's name is the one to replace

    stale = remove_stale_temp_files(cfg.OUTPUT_DIR) if is_main_process() else []
    if cfg.SEED >= 0:
        set_random_seed(cfg.SEED)
    setup_logger(cfg.OUTPUT_DIR)
    if cfg.SEED >= 0:
        logger.info(f"Setting fixed seed: {cfg.SEED}")
    logger.info("Arguments:\n" + "\n".join(f"{k}: {v}" for k, v in sorted(vars(args).items())))
    logger.info("Config:\n" + cfg.dump())
    logger.info("Environment:\n" + collect_env_info())
    if stale:
        logger.info(f"Removed {len(stale)} temporary file(s) of interrupted writes: {', '.join(stale)}")
    for warning in warnings:
        logger.warning(warning)
    # Training writes config.yaml itself once it knows whether it resumes (the record of a folder's
    # checkpoints is never replaced); an evaluation writes it here unless the folder holds a run.
    if args.eval_only and is_main_process() and not holds_checkpoints(cfg.OUTPUT_DIR):
        atomic_write_text(osp.join(cfg.OUTPUT_DIR, CONFIG_RECORD), cfg.dump())

    try:
        if not args.eval_only and not args.no_train:
            check_resumable_config(cfg)  # before the data: building it may regenerate a shared tree
        trainer = build_trainer(cfg)
        if args.eval_only:
            evaluate_saved_model(trainer, args.model_dir, args.load_epoch)
        elif not args.no_train:
            trainer.train()
    except (ConfigMismatchError, DataMismatchError) as err:
        # A refused resume changed nothing: log.txt stays the log of the run the folder holds.
        refused = give_log_back_to_earlier_attempt()
        if refused:
            err.add_note(f'(this attempt\'s log: "{refused}")')
        raise
