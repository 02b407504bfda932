"""The embedded world on disk: one CoOp-style tree per downstream dataset, written atomically under a lock.

Layout under ``<root>/world/``::

    <key>/manifest.json                   generator version, spec, class names (written last)
    <key>/images/<class>/NNNN.png         RGB, spec.image_size square
    <key>/split_world_<key>.json          {"train"|"val"|"test": [[rel, label, classname], ...]}
    <key>/split_fewshot/                  the few-shot caches, made by the loader
    .<key>.lock                           shared by every process using <key>, exclusive while writing it

A tree whose manifest differs from the requested one (older generator, other seed or sizes) is
rebuilt in a temporary folder beside it and swapped in by renames, only while no other process holds
the lock, so nobody ever reads a half-written or replaced tree. Each process keeps a shared lock on
every tree it prepared until it exits.
"""
from __future__ import annotations

import errno
import fcntl
import glob
import json
import logging
import os
import os.path as osp
import shutil
import tempfile
import zlib
from dataclasses import asdict, dataclass

import numpy as np
from tqdm import tqdm

from dassl.utils.errors import ConfigError, UserError

from .tasks import TASKS, WorldTask

logger = logging.getLogger(__name__)

GENERATOR_VERSION = 2
WORLD_DIR = "world"
MANIFEST = "manifest.json"

# Seed streams: every image has its own generator, seeded by (seed, stream, task, label, index), so
# images do not depend on generation order and the streams never overlap. The pretraining corpus is
# stream 1 (``corpus.STREAM_PRETRAIN``).
STREAM_DATASETS = 0
STREAM_CHECK = 2


@dataclass(frozen=True)
class WorldSpec:
    """What a generated tree holds; the manifest stores it, so a mismatch triggers regeneration."""

    seed: int = 0
    image_size: int = 32
    n_train: int = 32  # per class: the pool the few-shot subsets (up to 16 shots) are drawn from
    n_val: int = 8
    n_test: int = 100  # per class: one accuracy's sampling error is then about a point
    version: int = GENERATOR_VERSION


class WorldInUseError(UserError, RuntimeError):
    """The tree must be regenerated, but another process is using it (train.py prints the message alone)."""


def task_id(key: str) -> int:
    return zlib.crc32(key.encode())


def image_rng(seed: int, stream: int, key: str, label: int, index: int) -> np.random.Generator:
    """The generator that draws one image of a task."""
    return np.random.default_rng([seed, stream, task_id(key), label, index])


def class_folder(classname: str) -> str:
    return classname.replace(" ", "_")


def split_file_name(key: str) -> str:
    return f"split_world_{key}.json"


def expected_manifest(task: WorldTask, spec: WorldSpec) -> dict:
    """The manifest a complete tree of ``task`` for ``spec`` carries."""
    return {"task": task.key, "spec": asdict(spec), "classnames": task.classnames}


def read_manifest(dataset_dir: str) -> dict | None:
    try:
        with open(osp.join(dataset_dir, MANIFEST)) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError):
        return None


def check_spec(task: WorldTask, spec: WorldSpec) -> None:
    """Refuse a seed or sizes a task cannot have, naming the config key and what would be valid."""
    if spec.seed < 0:
        raise ConfigError(f"DATASET.WORLD.SEED is {spec.seed}; it must be >= 0")
    for key, value in (("N_TRAIN", spec.n_train), ("N_VAL", spec.n_val), ("N_TEST", spec.n_test)):
        if value < 1:
            raise ConfigError(f"DATASET.WORLD.{key} is {value}; it must be >= 1")
    if task.capacity is not None:
        capacity = task.capacity()
        total = spec.n_train + spec.n_val + spec.n_test
        if total > capacity:
            raise ConfigError(f"world/{task.key} has {capacity} images per class; DATASET.WORLD.N_TRAIN + N_VAL + "
                              f"N_TEST is {total}, it must be <= {capacity}")


def render_class(task: WorldTask, spec: WorldSpec, label: int, indices: range, stream: int = STREAM_DATASETS
                 ) -> list[np.ndarray]:
    """uint8 images [H, W, 3] of one class, number ``indices`` of ``stream`` (the tree on disk is stream 0)."""
    concept = task.classes[label][0]
    return [np.asarray(task.draw(image_rng(spec.seed, stream, task.key, label, i), concept, i, spec.image_size))
            for i in indices]


def _write_tree(task: WorldTask, spec: WorldSpec, out_dir: str) -> None:
    splits: dict[str, list] = {"train": [], "val": [], "test": []}
    counts = (("train", spec.n_train), ("val", spec.n_val), ("test", spec.n_test))
    total = spec.n_train + spec.n_val + spec.n_test
    for label, name in enumerate(tqdm(task.classnames, desc=f"world/{task.key}", leave=False)):
        folder = class_folder(name)
        os.makedirs(osp.join(out_dir, "images", folder))
        concept = task.classes[label][0]
        index = 0
        for split, n in counts:
            for _ in range(n):
                image = task.draw(image_rng(spec.seed, STREAM_DATASETS, task.key, label, index), concept, index,
                                  spec.image_size)
                rel = f"{folder}/{index:04d}.png"
                image.save(osp.join(out_dir, "images", rel))
                splits[split].append([rel, label, name])
                index += 1
        assert index == total
    with open(osp.join(out_dir, split_file_name(task.key)), "w") as f:
        json.dump(splits, f, indent=1)
    # the manifest goes last: a tree without one is never taken for complete
    with open(osp.join(out_dir, MANIFEST), "w") as f:
        json.dump(expected_manifest(task, spec), f, indent=1)


def _regenerate(world_dir: str, task: WorldTask, spec: WorldSpec) -> None:
    """Build the tree in a temporary folder and swap it in (caller holds the exclusive lock)."""
    target = osp.join(world_dir, task.key)
    for stale in glob.glob(osp.join(world_dir, f".{task.key}.tmp-*")) + glob.glob(osp.join(world_dir,
                                                                                           f".{task.key}.old-*")):
        shutil.rmtree(stale, ignore_errors=True)  # left by a killed generator; only a lock holder writes here
    if osp.exists(target):
        logger.info("world/%s was generated with other parameters (%s); regenerating it for %s", task.key,
                    (read_manifest(target) or {}).get("spec"), asdict(spec))
    else:
        logger.info("Generating world/%s (%d classes, %d + %d + %d images per class) under %s", task.key,
                    len(task.classes), spec.n_train, spec.n_val, spec.n_test, world_dir)
    tmp = tempfile.mkdtemp(prefix=f".{task.key}.tmp-", dir=world_dir)
    try:
        _write_tree(task, spec, tmp)
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; the tree is shared like any data folder
        if osp.exists(target):
            old = tempfile.mkdtemp(prefix=f".{task.key}.old-", dir=world_dir)
            os.rename(target, osp.join(old, "tree"))
            os.rename(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _try_flock(fd: int, mode: int) -> bool:
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
        return True
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise


_HELD: dict[str, int] = {}  # tree folder -> lock file descriptor this process holds shared


def _release(target: str) -> None:
    fd = _HELD.pop(target, None)
    if fd is not None:
        os.close(fd)  # closing drops the flock


def prepare_task(root: str, key: str, spec: WorldSpec = WorldSpec()) -> str:
    """Make sure ``<root>/world/<key>`` holds ``spec``'s tree and keep a shared lock on it; return the folder.

    Raises ``WorldInUseError`` when the tree must change while another process uses it.
    """
    if key not in TASKS:
        raise KeyError(f"Unknown world dataset {key!r}; valid: {sorted(TASKS)}")
    task = TASKS[key]
    check_spec(task, spec)
    world_dir = osp.join(root, WORLD_DIR)
    target = osp.join(world_dir, key)
    wanted = expected_manifest(task, spec)
    if target in _HELD and read_manifest(target) == wanted:
        return target
    _release(target)  # this process may regenerate a tree it used before
    os.makedirs(world_dir, exist_ok=True)
    fd = os.open(osp.join(world_dir, f".{key}.lock"), os.O_RDWR | os.O_CREAT, 0o666)
    try:
        while True:
            if _try_flock(fd, fcntl.LOCK_EX):
                if read_manifest(target) != wanted:
                    _regenerate(world_dir, task, spec)
                fcntl.flock(fd, fcntl.LOCK_SH)  # not atomic: re-check that nobody regenerated in between
            elif _try_flock(fd, fcntl.LOCK_SH):
                if read_manifest(target) != wanted:
                    raise WorldInUseError(
                        f"{target} holds another world ({(read_manifest(target) or {}).get('spec')}) and another "
                        f"process is using it, so it cannot be regenerated for {asdict(spec)} now; wait for that "
                        "run to finish or use another DATASET.ROOT")
            else:  # another process is writing the tree: wait for it, then look again
                logger.info("Waiting for another process to finish writing %s", target)
                fcntl.flock(fd, fcntl.LOCK_SH)
            if read_manifest(target) == wanted:
                _HELD[target] = fd
                return target
            fcntl.flock(fd, fcntl.LOCK_UN)
    except BaseException:
        os.close(fd)
        raise


def is_complete(root: str, key: str, spec: WorldSpec = WorldSpec()) -> bool:
    """Whether ``<root>/world/<key>`` holds the tree of ``spec``."""
    return read_manifest(osp.join(root, WORLD_DIR, key)) == expected_manifest(TASKS[key], spec)
