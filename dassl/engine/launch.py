"""One run of the command line in its output folder: processes, the folder lock, logging, then train or evaluate.

``train.py`` parses the arguments into a config and calls ``run``; everything after that lives in the engine.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import os.path as osp
from collections.abc import Sequence

from dassl.utils import (
    FolderLock,
    FolderNotWritableError,
    UserError,
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
from .run_state import CONFIG_RECORD, holds_checkpoints

__all__ = ["run", "run_locked", "NothingToLearnError", "check_learns_something"]

logger = logging.getLogger(__name__)

_NOT_WRITABLE_ERRNOS = (errno.EACCES, errno.EPERM, errno.EROFS)


class NothingToLearnError(UserError, RuntimeError):
    """A trainer that is not evaluation-only registers no learnable parameter: training would change nothing."""


def check_learns_something(trainer) -> None:
    """Refuse to train a trainer whose registered models (with an optimizer) hold no trainable parameter."""
    if getattr(trainer, "EVAL_ONLY", False):
        return
    learned = [
        p
        for name in trainer.get_model_names()
        if trainer._optims[name] is not None
        for p in trainer._models[name].parameters()
        if p.requires_grad
    ]
    if not learned:
        cls = type(trainer).__name__
        raise NothingToLearnError(
            f"{cls} registers no learnable parameter (no model registered with an optimizer and trainable weights), "
            "so training would change nothing and report the untrained model. In build_model, register the learned "
            "module: self.register_learner(module) (prompt trainers) or self.register_model(name, module, optim, "
            f"sched); or, if it learns nothing, set {cls}.EVAL_ONLY = True and run it with --eval-only"
        )


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _not_writable(err: OSError, cfg) -> FolderNotWritableError:
    """A refused write, said as what the run needs: a writable output folder, or a writable dataset folder."""
    path = osp.abspath(err.filename) if err.filename else "?"
    reason = "read-only file system" if err.errno == errno.EROFS else "permission denied"
    output = osp.abspath(cfg.OUTPUT_DIR) if cfg.OUTPUT_DIR else ""
    root = osp.abspath(cfg.DATASET.ROOT) if cfg.DATASET.ROOT else ""
    message = f'Cannot write "{path}" ({reason})'
    if output and (_within(path, output) or _within(output, path)):
        message += (
            f': the run writes its log, config and checkpoints into OUTPUT_DIR "{output}"; make it writable, '
            "or pass another --output-dir"
        )
    elif root and _within(path, root):
        message += (
            f': datasets under DATASET.ROOT "{root}" keep their few-shot cache (split_fewshot/) and split files '
            "there; make it writable, or copy the dataset to a writable folder and pass that as --root"
        )
    return FolderNotWritableError(message)


def run(args: argparse.Namespace, cfg, warnings: Sequence[str] = ()) -> None:
    """Start torch.distributed when launched by torchrun, lock OUTPUT_DIR (rank 0), then ``run_locked``."""
    import torch.distributed as dist

    init_distributed_from_env(bool(cfg.USE_CUDA))
    try:
        with FolderLock(cfg.OUTPUT_DIR) if is_main_process() else contextlib.nullcontext():
            run_locked(args, cfg, warnings)
    except OSError as err:
        if isinstance(err, UserError) or err.errno not in _NOT_WRITABLE_ERRNOS or not err.filename:
            raise
        raise _not_writable(err, cfg) from err
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

    trainer = None
    try:
        if not args.eval_only and not args.no_train:
            check_resumable_config(cfg)  # before the data: building it may regenerate a shared tree
        trainer = build_trainer(cfg)
        if args.eval_only:
            allow_mismatch = getattr(args, "allow_model_mismatch", False)
            evaluate_saved_model(trainer, args.model_dir, args.load_epoch, allow_mismatch)
        elif not args.no_train:
            check_learns_something(trainer)
            trainer.train()
    except BaseException as err:
        # A training attempt that failed before it passed its resume checks changed nothing in the folder
        # (a refused resume, a mistyped --root): log.txt stays the log of the run the folder holds.
        if not args.eval_only and not getattr(trainer, "run_under_way", False):
            refused = give_log_back_to_earlier_attempt(
                "-refused" if isinstance(err, (UserError, FileNotFoundError)) else "-failed"
            )
            if refused:
                err.add_note(f'(this attempt\'s log: "{refused}")')
        raise
