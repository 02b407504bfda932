"""Train or evaluate a prompt-learning trainer (the Dassl/CoOp command line).

Single process:  python train.py --root DATA --trainer CoOp --dataset-config-file ... --output-dir OUT
Several:         torchrun --nproc_per_node N train.py ...   (DDP: gloo on CPU, nccl on GPU)
Re-running the same command resumes from OUTPUT_DIR; KEY VALUE pairs override the config (flags may
come before or after them). A user error (bad key or value, missing data or weights, a refused
resume) is printed in one or two lines; --debug (or GOPRO_DEBUG=1) shows its traceback.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import os.path as osp
import sys

# torch, torchvision and open_clip take seconds to import: they are imported inside the functions
# that need them, so --help and argument errors answer at once.

logger = logging.getLogger("train")

REPO = osp.dirname(osp.abspath(__file__))
DEBUG_ENV = "GOPRO_DEBUG"
# Config values that may name a file shipped in this repository (configs/*/world.yaml name
# assets/world_clip_vit.pt); such a path is resolved against the repository, not the current folder.
REPO_RELATIVE_KEYS = ("MODEL.BACKBONE.NAME", "MODEL.INIT_WEIGHTS")


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
        "--debug", action="store_true", help=f"show the traceback of a user error too (or set {DEBUG_ENV}=1)"
    )
    parser.add_argument(
        "opts", default=None, nargs="*", metavar="KEY VALUE", help="modify config options with KEY VALUE pairs"
    )
    return parser


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Flags and KEY VALUE pairs in any order (``... OPTIM.LR 0.01 --eval-only`` works)."""
    return build_parser().parse_intermixed_args(argv)


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


def resolve_repo_paths(cfg) -> None:
    """Make a relative path in ``REPO_RELATIVE_KEYS`` that names a file of this repository absolute.

    A file of that name in the current folder that is another file wins, as a plain path would.
    """
    for key in REPO_RELATIVE_KEYS:
        *parents, leaf = key.split(".")
        node = cfg
        for part in parents:
            node = node[part]
        value = node[leaf]
        if not isinstance(value, str) or not value or osp.isabs(value):
            continue
        in_repo = osp.join(REPO, value)
        if osp.isfile(in_repo) and (not osp.exists(value) or osp.samefile(value, in_repo)):
            node[leaf] = in_repo


def setup_cfg(args: argparse.Namespace):
    """Defaults (with every registered extension) <- dataset file <- trainer file <- flags <- KEY VALUE."""
    import datasets  # noqa: F401  (registers every dataset loader and its config keys)
    import trainers  # noqa: F401  (registers every trainer and its config keys)
    from dassl.config import get_cfg_default, merge_from_file_checked, merge_from_list_checked

    cfg = get_cfg_default()
    if args.dataset_config_file:
        merge_from_file_checked(cfg, args.dataset_config_file)
    if args.config_file:
        merge_from_file_checked(cfg, args.config_file)
    reset_cfg(cfg, args)
    merge_from_list_checked(cfg, args.opts or [])
    resolve_repo_paths(cfg)
    cfg.freeze()
    return cfg


def given_keys(args: argparse.Namespace) -> list[str]:
    """The config keys the user set: in the config files and the KEY VALUE pairs."""
    from yacs.config import CfgNode

    from dassl.config import all_keys

    keys = []
    for path in (args.dataset_config_file, args.config_file):
        if path:
            with open(path) as f:
                keys += all_keys(CfgNode.load_cfg(f))
    return keys + list((args.opts or [])[0::2])


def trainer_config_node(trainer_name: str) -> str:
    """The ``cfg.TRAINER.<node>`` a registered trainer reads (its PREC included): its ``CFG_NODE``, else its
    name upper-cased, as the engine resolves it."""
    from dassl.engine import TRAINER_REGISTRY

    return getattr(TRAINER_REGISTRY.get(trainer_name), "CFG_NODE", "") or trainer_name.upper()


def foreign_trainer_keys(args: argparse.Namespace, trainer_name: str) -> tuple[str, list[str]]:
    """(this trainer's TRAINER node, the given ``TRAINER.<X>.*`` keys of other trainers, which it never reads)."""
    from dassl.engine import TRAINER_REGISTRY

    if trainer_name not in TRAINER_REGISTRY:
        return "", []
    node = trainer_config_node(trainer_name)
    foreign = [
        k for k in given_keys(args) if k.startswith("TRAINER.") and k.split(".")[1] not in ("NAME", node)
    ]
    return node, foreign


def trained_config(model_dir: str):
    """The config.yaml of the run that wrote ``model_dir`` (None when it has none)."""
    from yacs.config import CfgNode

    path = osp.join(model_dir, "config.yaml")
    if not osp.isfile(path):
        return None
    with open(path) as f:
        return CfgNode.load_cfg(f)


def trained_final_model(model_dir: str, default: str) -> str:
    """TEST.FINAL_MODEL of the run that wrote ``model_dir`` (its config.yaml), else ``default``."""
    cfg = trained_config(model_dir)
    return default if cfg is None else cfg.get("TEST", {}).get("FINAL_MODEL", default)


def warn_if_unfinished(trainer, model_dir: str, loaded: str) -> None:
    """Say loudly when ``model_dir``'s training never reached its last epoch: its accuracy is not the run's."""
    cfg = trained_config(model_dir)
    names = trainer.get_model_names()
    if cfg is None or not names:
        return
    max_epoch = cfg.get("OPTIM", {}).get("MAX_EPOCH")
    if max_epoch is None or osp.isfile(osp.join(model_dir, names[0], f"model.pth.tar-{max_epoch}")):
        return
    logger.warning(
        f'WARNING: "{model_dir}" holds an unfinished run (no model.pth.tar-{max_epoch}; its OPTIM.MAX_EPOCH is '
        f"{max_epoch}): evaluating {loaded}, so this accuracy is not that of the trained model. Finish the "
        "training first (run its command again: it resumes)."
    )


def evaluate_saved_model(trainer, model_dir: str, load_epoch: int | None) -> float:
    """Load the requested checkpoint from ``model_dir`` and test it; never trains.

    Without ``load_epoch`` it loads the model the training run deployed: model-best for a best_val run,
    else the latest checkpoint, so base and new accuracies always come from the same model.
    """
    from dassl.config import ConfigError

    if load_epoch is not None and not model_dir:
        raise ConfigError("--load-epoch needs --model-dir (the training run's output folder)")
    if not model_dir and trainer.has_learned_modules():
        logger.warning(
            f"WARNING: --eval-only without --model-dir: {type(trainer).__name__} learns its prompt, and this "
            "evaluates the untrained one (its initialisation). Pass --model-dir <training output folder>."
        )
    if model_dir and load_epoch is None:
        latest = trainer.latest_saved_epoch(model_dir)  # also checks that the folder holds a checkpoint
        best_val = trained_final_model(model_dir, trainer.cfg.TEST.FINAL_MODEL) == "best_val"
        load_epoch = None if best_val else latest
        loaded = "model-best.pth.tar" if load_epoch is None else f"model.pth.tar-{load_epoch}"
        warn_if_unfinished(trainer, model_dir, loaded)
    trainer.load_model(model_dir, epoch=load_epoch)
    return trainer.test()


def run_locked(args: argparse.Namespace, cfg) -> None:
    """Everything that writes into OUTPUT_DIR; the caller holds the folder's lock (rank 0)."""
    from dassl.engine import build_trainer
    from dassl.engine.distributed import is_main_process
    from dassl.engine.run_state import ConfigMismatchError, DataMismatchError, holds_checkpoints
    from dassl.engine.trainer import check_resumable_config
    from dassl.utils import (
        atomic_write_text,
        collect_env_info,
        give_log_back_to_earlier_attempt,
        remove_stale_temp_files,
        set_random_seed,
        setup_logger,
    )

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
    node, foreign = foreign_trainer_keys(args, cfg.TRAINER.NAME)
    if foreign:
        verb = "belongs" if len(foreign) == 1 else "belong"
        logger.warning(
            f"WARNING: {', '.join(foreign)} {verb} to another trainer; {cfg.TRAINER.NAME} reads "
            f"TRAINER.{node}.* only, so the value has no effect"
        )
    # Training writes config.yaml itself once it knows whether it resumes (the record of a folder's
    # checkpoints is never replaced); an evaluation writes it here unless the folder holds a run.
    if args.eval_only and is_main_process() and not holds_checkpoints(cfg.OUTPUT_DIR):
        atomic_write_text(osp.join(cfg.OUTPUT_DIR, "config.yaml"), cfg.dump())

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


def main(argv: list[str] | None = None) -> None:
    """Parse, lock OUTPUT_DIR, train or evaluate. Errors propagate (``cli`` turns user errors into one line)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:
        build_parser().print_usage(sys.stderr)
        print("train.py: no arguments; see --help (nothing was written)", file=sys.stderr)
        raise SystemExit(2)
    args = parse_args(argv)
    cfg = setup_cfg(args)

    import torch.distributed as dist

    from dassl.engine.distributed import init_distributed_from_env, is_main_process
    from dassl.utils import FolderLock

    init_distributed_from_env(bool(cfg.USE_CUDA))
    try:
        with FolderLock(cfg.OUTPUT_DIR) if is_main_process() else contextlib.nullcontext():
            run_locked(args, cfg)
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


# The packages' user-error bases (module, class): dassl's, and clip's for weights that cannot be loaded
# (clip/ knows nothing of dassl, so its errors have their own base).
USER_ERROR_BASES = (("dassl.utils.errors", "UserError"), ("clip.errors", "BackboneLoadError"))


def _is_user_error(err: BaseException) -> bool:
    # Looked up, not imported: a module that was never imported raised nothing, and when importing it
    # failed, that error is no user error.
    bases = [getattr(sys.modules[module], name) for module, name in USER_ERROR_BASES if module in sys.modules]
    return isinstance(err, (FileNotFoundError, *bases))


def _one_message(err: BaseException) -> str:
    """The error's own message; an error re-raised from a DataLoader worker carries the worker's traceback."""
    text = str(err).strip() or type(err).__name__
    if "Original Traceback" in text:
        last = text.splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return " ".join([text, *getattr(err, "__notes__", [])])


def cli(argv: list[str] | None = None) -> int:
    """``main`` for a shell: a user error is one ``error:`` line and exit code 1, a bug keeps its traceback."""
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    try:
        main(argv)
    except KeyboardInterrupt:
        if debug:
            raise
        print("error: interrupted; checkpoints are written atomically, so the same command resumes", file=sys.stderr)
        return 130
    except Exception as err:
        if debug or not _is_user_error(err):
            raise
        from dassl.engine.distributed import user_error_prefix

        message = f"error: {user_error_prefix()}{_one_message(err)}"  # under torchrun, rank 0 alone prints it
        print(message, file=sys.stderr)
        print(f"(run with --debug or {DEBUG_ENV}=1 for the traceback)", file=sys.stderr)
        logger_module = sys.modules.get("dassl.utils.logger")
        if logger_module is not None:
            logger_module.write_to_log_file(message)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(cli())
