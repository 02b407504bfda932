"""The scripts' skip rule: does a finished run folder hold what these train.py arguments would produce?

    python tools/run_config.py describe --trainer T --config-file F --cfg NAME [--backbone B] [--tag TAG]
                                        [KEY VALUE ...]
    python tools/run_config.py check [--model] [--source KEY] RUN_DIR TRAIN.PY-ARGUMENTS...
    python tools/run_config.py record --source KEY RUN_DIR TRAIN.PY-ARGUMENTS...

``describe`` runs once per script call and prints ``CONFIG_NAME=`` (the configuration's output folder, see
tools/config_name.py), ``EVAL_ONLY=`` (1 when the trainer class learns nothing: its ``EVAL_ONLY``) and
``SOURCE_KEY=``, a fingerprint of everything besides the arguments that decides the config train.py builds:
the code and config files of this repository, the current folder and the backbone file's size and time.

``check`` builds the config exactly as ``train.py`` would (its own parser and ``setup_cfg``) and compares it with
``RUN_DIR/config.yaml`` on every key that shapes the run's result: the keys the engine's resume check compares
(what is learned), plus the test split and evaluator. Where files go, worker counts and batch sizes of
evaluation are ignored. A key the saved config lacks (written before the key existed) is taken at its default.
With ``--model`` the run is a trained model about to be evaluated elsewhere: only what is learned is compared,
and its checkpoints must have reached its last epoch. Building the config imports torch (seconds), so with
``--source`` a folder whose ``config_request.json`` records the same source key and arguments, next to the
``config.yaml`` it recorded them for, is that run without building anything; a folder that passes the full check
gets that record. ``record`` writes it after a fresh run.

Exit code 0: same config (and finished); 1: differs or unfinished, the reasons on stderr; 2: cannot
compare (no config.yaml, bad arguments, unknown trainer).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import os.path as osp
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, REPO)  # run from any folder

from tools import config_name  # noqa: E402  (torch-free, as is everything imported at module level here)

# The engine lets these TEST keys change on resume (they do not change what is learned), but they
# decide which figure a finished run reports, so a result made under other values is not reused.
RESULT_TEST_KEYS = ("TEST.SPLIT", "TEST.EVALUATOR", "TEST.FINAL_MODEL", "TEST.NO_TEST")
CHECKPOINT_POINTER = "checkpoint"  # the file in each model folder naming its latest checkpoint
EPOCH_CHECKPOINT_PREFIX = "model.pth.tar-"
ABSENT = "<absent>"
CONFIG_RECORD = "config.yaml"
REQUEST_RECORD = "config_request.json"  # the request a folder's config.yaml is known to answer
# What decides the config train.py builds from given arguments: the code that defines and merges the keys,
# this file's comparison, and the config files.
SOURCE_FOLDERS = (("dassl", ".py"), ("trainers", ".py"), ("datasets", ".py"), ("configs", ".yaml"))
SOURCE_FILES = ("train.py", "tools/run_config.py")
REGISTRY_CACHE = osp.join(REPO, ".cache", "trainer_registry.json")  # EVAL_ONLY of each trainer, per code


# ---------------------------------------------------------------------------- the exact check (imports torch)


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
    from dassl.engine.run_state import config_fingerprint

    view = dict(config_fingerprint(cfg)[1])
    if not learned_only:
        view.update({key: _lookup(cfg, key) for key in RESULT_TEST_KEYS})
    return view


def requested_config(train_args: list[str]):
    """The config ``python train.py TRAIN_ARGS`` would run with."""
    import datasets  # noqa: F401  (registers every dataset loader and its config keys)
    import trainers  # noqa: F401  (registers every trainer and its config keys)
    from dassl.command_line import parse_args, setup_cfg

    return setup_cfg(parse_args(train_args))


def saved_config(run_dir: str):
    from yacs.config import CfgNode

    path = osp.join(run_dir, CONFIG_RECORD)
    if not osp.isfile(path):
        raise FileNotFoundError(f"{path} does not exist, so the run's config cannot be compared")
    with open(path, encoding="utf-8") as handle:
        return CfgNode.load_cfg(handle)


def config_differences(saved: dict, requested: dict, learned_only: bool = False) -> list[str]:
    """One 'KEY: saved -> requested' line per compared key that differs."""
    from dassl.config import get_cfg_default

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


# ---------------------------------------------------------------------------- the request record (no torch)


def _source_files(repo: str) -> Iterator[str]:
    for folder, suffix in SOURCE_FOLDERS:
        for root, dirs, files in os.walk(osp.join(repo, folder)):
            dirs[:] = sorted(d for d in dirs if not d.startswith((".", "__")))
            yield from (osp.join(root, name) for name in sorted(files) if name.endswith(suffix))
    yield from (osp.join(repo, name) for name in SOURCE_FILES)


def code_fingerprint(repo: str = REPO) -> str:
    """A hash of the code and config files that turn train.py's arguments into a config."""
    digest = hashlib.sha256()
    for path in _source_files(repo):
        if osp.isfile(path):
            digest.update(osp.relpath(path, repo).encode("utf-8") + b"\0")
            with open(path, "rb") as handle:
                digest.update(handle.read() + b"\0")
    return digest.hexdigest()


def backbone_signature(config_file: str, backbone: str, settings: list[tuple[str, str]]) -> str:
    """The backbone train.py will load (the last of the config file's, BACKBONE and OPTS), with the size and time
    of its file when it names one: a file replaced at the same path gives another signature."""
    value: Any = dict(settings).get(config_name.BACKBONE_KEY) or backbone
    if not value:
        value = config_name.lookup(config_name.load_config_file(config_file), config_name.BACKBONE_KEY)[1]
    path = config_name.resolved_path(config_name.decode(value))
    if isinstance(path, str) and osp.isfile(path):
        stat = os.stat(path)
        return f"{path}:{stat.st_size}:{stat.st_mtime_ns}"
    return str(value)


def source_key(code: str, cwd: str, backbone: str) -> str:
    return hashlib.sha256("\0".join((code, cwd, backbone)).encode("utf-8")).hexdigest()[:32]


def _file_hash(path: str) -> str | None:
    if not osp.isfile(path):
        return None
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def _request(source: str, run_dir: str, train_args: list[str]) -> dict:
    return {"source": source, "args": list(train_args), "config": _file_hash(osp.join(run_dir, CONFIG_RECORD))}


def record_request(run_dir: str, source: str, train_args: list[str]) -> None:
    """Note that ``run_dir``'s config.yaml is what ``train_args`` give under ``source`` (atomically)."""
    request = _request(source, run_dir, train_args)
    if request["config"] is None:
        return
    _write_json_atomically(osp.join(run_dir, REQUEST_RECORD), request)


def recorded_request_matches(run_dir: str, source: str, train_args: list[str]) -> bool:
    """Whether ``run_dir`` records this request for the config.yaml it holds now."""
    try:
        with open(osp.join(run_dir, REQUEST_RECORD), encoding="utf-8") as handle:
            recorded = json.load(handle)
    except (OSError, ValueError):
        return False
    return recorded == _request(source, run_dir, train_args)


def _write_json_atomically(path: str, data: dict) -> None:
    folder = osp.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(data, out, indent=1)
        os.replace(temporary, path)
    except BaseException:
        if osp.exists(temporary):
            os.unlink(temporary)
        raise


# ---------------------------------------------------------------------------- the trainer registry, cached


class UnknownTrainer(ValueError):
    """TRAINER names no registered trainer."""


def registry_eval_only() -> dict[str, bool]:
    """Every registered trainer's ``EVAL_ONLY`` (imports the trainers, and so torch)."""
    import trainers  # noqa: F401  (registers every trainer)
    from dassl.engine import TRAINER_REGISTRY

    return {name: bool(getattr(TRAINER_REGISTRY.get(name), "EVAL_ONLY", False))
            for name in TRAINER_REGISTRY.registered_names()}


def eval_only_trainers(code: str, cache: str = REGISTRY_CACHE) -> dict[str, bool]:
    """``registry_eval_only()``, read from ``cache`` when it was written for the same code."""
    try:
        with open(cache, encoding="utf-8") as handle:
            cached = json.load(handle)
        if cached.get("code") == code:
            return dict(cached["eval_only"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    found = registry_eval_only()
    try:
        _write_json_atomically(cache, {"code": code, "eval_only": found})
    except OSError:  # a read-only checkout: no cache, the registry is imported each time
        pass
    return found


# ---------------------------------------------------------------------------- commands


def check(run_dir: str, train_args: list[str], as_model: bool = False, source: str | None = None) -> list[str]:
    """Every reason ``run_dir`` is not the run (or, ``as_model``, the finished model) these arguments
    ask for; empty when it is. With ``source``, a matching request record stands for the config comparison,
    and a full comparison that passes (not ``as_model``) writes that record."""
    saved = saved_config(run_dir)
    fast = source is not None and recorded_request_matches(run_dir, source, train_args)
    problems = []
    if not fast:
        differences = config_differences(saved, requested_config(train_args), learned_only=as_model)
        problems = [f"config differs: {d}" for d in differences]
    if as_model:
        reason = unfinished_reason(run_dir, saved)
        if reason:
            problems.append(f"unfinished: {reason}")
    elif not problems and not fast and source is not None:
        record_request(run_dir, source, train_args)
    return problems


def describe(trainer: str, config_file: str, cfg: str, backbone: str = "", tag: str = "",
             settings: list[tuple[str, str]] | None = None, cache: str = REGISTRY_CACHE) -> dict[str, str]:
    """CONFIG_NAME, EVAL_ONLY and SOURCE_KEY of one script call (see the module docstring)."""
    settings = list(settings or [])
    if tag and config_name.check_tag(tag):
        raise ValueError(config_name.check_tag(tag))
    if backbone:
        settings.insert(0, (config_name.BACKBONE_KEY, backbone))  # OPTS come after: they win, as in train.py
    code = code_fingerprint()
    eval_only = eval_only_trainers(code, cache)
    if trainer not in eval_only:
        raise UnknownTrainer(f"TRAINER '{trainer}' is not a registered trainer; registered: "
                             f"{', '.join(sorted(eval_only))}")
    return {
        "CONFIG_NAME": config_name.folder_name(cfg, config_file, settings, tag),
        "EVAL_ONLY": "1" if eval_only[trainer] else "0",
        "SOURCE_KEY": source_key(code, os.getcwd(), backbone_signature(config_file, backbone, settings)),
    }


def _pairs(words: list[str]) -> list[tuple[str, str]]:
    if len(words) % 2:
        raise ValueError(f"KEY VALUE pairs expected, got an odd number of words: {' '.join(words)}")
    return list(zip(words[0::2], words[1::2]))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    about = commands.add_parser("describe", help="the configuration's folder name, EVAL_ONLY and source key")
    about.add_argument("--trainer", required=True)
    about.add_argument("--config-file", required=True, help="the trainer config file")
    about.add_argument("--cfg", required=True, help="its name (the folder name without settings)")
    about.add_argument("--backbone", default="", help="the BACKBONE setting (MODEL.BACKBONE.NAME)")
    about.add_argument("--tag", default="", help="a folder name to use instead of the settings")
    about.add_argument("settings", nargs=argparse.REMAINDER, help="OPTS: KEY VALUE pairs")
    for name in ("check", "record"):
        command = commands.add_parser(name, help="compare RUN_DIR with a request" if name == "check"
                                      else "note that RUN_DIR answers a request")
        if name == "check":
            command.add_argument("--model", action="store_true",
                                 help="RUN_DIR is a trained model to evaluate: compare only what is learned, "
                                      "and require its checkpoints to have reached OPTIM.MAX_EPOCH")
        command.add_argument("--source", required=name == "record", default=None,
                             help="SOURCE_KEY from describe: allows the recorded-request shortcut")
        command.add_argument("run_dir", help="a run folder written by train.py (holds config.yaml)")
        command.add_argument("train_args", nargs=argparse.REMAINDER, help="train.py's arguments for that run")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "describe":
            facts = describe(args.trainer, args.config_file, args.cfg, args.backbone, args.tag,
                             _pairs(args.settings))
            print("".join(f"{key}={value}\n" for key, value in facts.items()), end="")
            return 0
        if args.command == "record":
            record_request(args.run_dir, args.source, args.train_args)
            return 0
        problems = check(args.run_dir, args.train_args, args.model, args.source)
    except (OSError, ValueError) as error:  # no config.yaml, an unknown trainer, key or value
        print(f"error: {error}", file=sys.stderr)
        return 2
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
