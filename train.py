"""Train or evaluate a prompt-learning trainer (the Dassl/CoOp command line).

Single process:  python train.py --root DATA --trainer CoOp --dataset-config-file ... --output-dir OUT
Several:         torchrun --nproc_per_node N train.py ...   (DDP: gloo on CPU, nccl on GPU)
Re-running the same command resumes from OUTPUT_DIR; KEY VALUE pairs override the config (flags may
come before or after them). A user error (bad key or value, missing data or weights, a refused
resume) is printed in one or two lines; --debug (or GOPRO_DEBUG=1) shows its traceback.
"""
from __future__ import annotations

import argparse
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
    parser.add_argument(
        "--allow-model-mismatch",
        action="store_true",
        help="with --eval-only --model-dir: evaluate the model even when its config.yaml or run.json differ from "
        "this run in what shapes the model (trainer, backbone file, the trainer's keys); logged as a WARNING",
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
    from dassl.config import all_keys, load_config_file

    keys = []
    for path in (args.dataset_config_file, args.config_file):
        if path:
            keys += all_keys(load_config_file(path))
    return keys + list((args.opts or [])[0::2])


def foreign_trainer_keys(args: argparse.Namespace, trainer_name: str) -> tuple[str, list[str]]:
    """(this trainer's TRAINER node, the given ``TRAINER.<X>.*`` keys of other trainers, which it never reads)."""
    from dassl.engine import TRAINER_REGISTRY, trainer_config_node

    if trainer_name not in TRAINER_REGISTRY:
        return "", []
    node = trainer_config_node(trainer_name)
    foreign = [
        k for k in given_keys(args) if k.startswith("TRAINER.") and k.split(".")[1] not in ("NAME", node)
    ]
    return node, foreign


def foreign_key_warnings(args: argparse.Namespace, trainer_name: str) -> list[str]:
    """A warning naming the given ``TRAINER.<X>.*`` keys that this trainer never reads (none when there are none)."""
    node, foreign = foreign_trainer_keys(args, trainer_name)
    if not foreign:
        return []
    verb = "belongs" if len(foreign) == 1 else "belong"
    return [
        f"WARNING: {', '.join(foreign)} {verb} to another trainer; {trainer_name} reads "
        f"TRAINER.{node}.* only, so the value has no effect"
    ]


def main(argv: list[str] | None = None) -> None:
    """Parse, then hand the run to the engine. Errors propagate (``cli`` turns user errors into one line)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:
        build_parser().print_usage(sys.stderr)
        print("train.py: no arguments; see --help (nothing was written)", file=sys.stderr)
        raise SystemExit(2)
    args = parse_args(argv)
    cfg = setup_cfg(args)
    from dassl.engine.launch import run

    run(args, cfg, foreign_key_warnings(args, cfg.TRAINER.NAME))


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
