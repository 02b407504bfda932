"""The command line's config: arguments -> the run's yacs config, the way train.py builds it.

Kept free of torch at import time (argparse only), so ``train.py --help`` and argument errors answer at once.
``setup_cfg`` reads the config extensions of the packages already imported: import those whose keys a run may
set first (train.py imports ``datasets`` and ``trainers``).
"""
from __future__ import annotations

import argparse
import os.path as osp

__all__ = [
    "REPO",
    "DEBUG_ENV",
    "build_parser",
    "parse_args",
    "reset_cfg",
    "resolve_repo_paths",
    "setup_cfg",
    "given_keys",
    "foreign_trainer_keys",
    "foreign_key_warnings",
]

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))  # the folder holding dassl/
DEBUG_ENV = "GOPRO_DEBUG"
# Config values that may name a file shipped in this repository (configs/*/world.yaml name
# assets/world_clip_vit.pt); such a path is resolved against the repository, not the current folder.
REPO_RELATIVE_KEYS = ("MODEL.BACKBONE.NAME", "MODEL.INIT_WEIGHTS")


def build_parser(description: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
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


def parse_args(argv: list[str], parser: argparse.ArgumentParser | None = None) -> argparse.Namespace:
    """Flags and KEY VALUE pairs in any order (``... OPTIM.LR 0.01 --eval-only`` works)."""
    return (parser or build_parser()).parse_intermixed_args(argv)


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
