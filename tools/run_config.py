"""Does a finished run folder hold what these train.py arguments would produce? (the scripts' skip rule)

    python tools/run_config.py [--model] RUN_DIR TRAIN.PY-ARGUMENTS...

Builds the config exactly as ``train.py`` would (its own parser and ``setup_cfg``) and compares it with
``RUN_DIR/config.yaml`` on every key that shapes the run's result: the keys the engine's resume check
compares (what is learned), plus the test split and evaluator. Where files go, worker counts and
batch sizes of evaluation are ignored. A key the saved config lacks (written before the key existed)
is taken at its default. With ``--model`` the run is a trained model about to be evaluated elsewhere:
only what is learned is compared, and its checkpoints must have reached its last epoch.

Exit code 0: same config (and finished); 1: differs or unfinished, the reasons on stderr; 2: cannot
compare (no config.yaml, bad arguments).
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import sys
from typing import Any

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from any folder

from yacs.config import CfgNode  # noqa: E402

from dassl.config import get_cfg_default  # noqa: E402
from dassl.engine.run_state import config_fingerprint  # noqa: E402
from train import build_parser, setup_cfg  # noqa: E402

# The engine lets these TEST keys change on resume (they do not change what is learned), but they
# decide which figure a finished run reports, so a result made under other values is not reused.
RESULT_TEST_KEYS = ("TEST.SPLIT", "TEST.EVALUATOR", "TEST.FINAL_MODEL", "TEST.NO_TEST")
CHECKPOINT_POINTER = "checkpoint"  # the file in each model folder naming its latest checkpoint
EPOCH_CHECKPOINT_PREFIX = "model.pth.tar-"
ABSENT = "<absent>"


def _lookup(cfg: dict, dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return ABSENT
        node = node[part]
    return list(node) if isinstance(node, tuple) else node


def compared_keys(cfg: dict, learned_only: bool = False) -> dict[str, Any]:
    """The flat KEY -> value view of ``cfg`` on the keys that shape what is learned and, unless
    ``learned_only``, the reported accuracy."""
    view = dict(config_fingerprint(cfg)[1])
    if not learned_only:
        view.update({key: _lookup(cfg, key) for key in RESULT_TEST_KEYS})
    return view


def requested_config(train_args: list[str]) -> CfgNode:
    """The config ``python train.py TRAIN_ARGS`` would run with."""
    return setup_cfg(build_parser().parse_args(train_args))


def saved_config(run_dir: str) -> CfgNode:
    path = osp.join(run_dir, "config.yaml")
    if not osp.isfile(path):
        raise FileNotFoundError(f"{path} does not exist, so the run's config cannot be compared")
    with open(path, encoding="utf-8") as handle:
        return CfgNode.load_cfg(handle)


def config_differences(saved: dict, requested: dict, learned_only: bool = False) -> list[str]:
    """One 'KEY: saved -> requested' line per compared key that differs."""
    saved_view = {**compared_keys(get_cfg_default(), learned_only), **compared_keys(saved, learned_only)}
    requested_view = compared_keys(requested, learned_only)
    return [
        f"{key}: {saved_view.get(key, ABSENT)!r} -> {requested_view.get(key, ABSENT)!r}"
        for key in sorted(set(saved_view) | set(requested_view))
        if saved_view.get(key, ABSENT) != requested_view.get(key, ABSENT)
    ]


def _epoch_of(checkpoint_name: str) -> int | None:
    suffix = checkpoint_name[len(EPOCH_CHECKPOINT_PREFIX):]
    return int(suffix) if checkpoint_name.startswith(EPOCH_CHECKPOINT_PREFIX) and suffix.isdigit() else None


def unfinished_reason(run_dir: str, saved: dict) -> str | None:
    """Why the training in ``run_dir`` has not reached its last epoch, or None when it has."""
    max_epoch = int(_lookup(saved, "OPTIM.MAX_EPOCH"))
    model_dirs = sorted(
        entry.path for entry in os.scandir(run_dir)
        if entry.is_dir() and osp.isfile(osp.join(entry.path, CHECKPOINT_POINTER))
    )
    if not model_dirs:
        return f"{run_dir} holds no checkpoint (no <model>/{CHECKPOINT_POINTER} file)"
    for model_dir in model_dirs:
        if osp.isfile(osp.join(model_dir, f"{EPOCH_CHECKPOINT_PREFIX}{max_epoch}")):
            continue
        with open(osp.join(model_dir, CHECKPOINT_POINTER), encoding="utf-8") as handle:
            latest = handle.readline().strip()
        epoch = _epoch_of(latest)
        reached = f"epoch {epoch} of {max_epoch}" if epoch is not None else f"{latest}, not epoch {max_epoch}"
        return f"{run_dir} stopped at {reached} ({model_dir} has no {EPOCH_CHECKPOINT_PREFIX}{max_epoch})"
    return None


def check(run_dir: str, train_args: list[str], as_model: bool = False) -> list[str]:
    """Every reason ``run_dir`` is not the run (or, ``as_model``, the finished model) these arguments
    ask for; empty when it is."""
    saved = saved_config(run_dir)
    differences = config_differences(saved, requested_config(train_args), learned_only=as_model)
    problems = [f"config differs: {d}" for d in differences]
    if as_model:
        reason = unfinished_reason(run_dir, saved)
        if reason:
            problems.append(f"unfinished: {reason}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="store_true",
                        help="RUN_DIR is a trained model to evaluate: compare only what is learned, and "
                             "require its checkpoints to have reached OPTIM.MAX_EPOCH")
    parser.add_argument("run_dir", help="a run folder written by train.py (holds config.yaml)")
    parser.add_argument("train_args", nargs=argparse.REMAINDER, help="train.py's arguments for that run")
    args = parser.parse_args(argv)
    try:
        problems = check(args.run_dir, args.train_args, args.model)
    except (OSError, ValueError) as error:  # no config.yaml, an unknown key or bad value in the arguments
        print(f"error: {error}", file=sys.stderr)
        return 2
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
