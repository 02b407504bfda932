"""The rolling ``last`` checkpoint: everything needed to continue a run exactly where it stopped.

It holds every registered model, optimizer and scheduler, the epoch and step reached, the best
result, the RNG states of python, numpy, torch (and the sampler), the config, and a fingerprint
of the data (class names, split sizes). A run never resumes from a folder trained with another
config (compared with the folder's ``config.yaml`` whatever checkpoint is resumed) or other data.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import os.path as osp
import random
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from dassl.config import run_local_keys
from dassl.utils.errors import UserError

__all__ = [
    "LAST_CHECKPOINT",
    "CONFIG_RECORD",
    "RUN_LOCAL_KEYS",
    "ConfigMismatchError",
    "DataMismatchError",
    "capture_rng_state",
    "restore_rng_state",
    "loader_samplers",
    "config_fingerprint",
    "check_same_config",
    "data_fingerprint",
    "check_same_data",
    "last_checkpoint_path",
    "holds_checkpoints",
]

logger = logging.getLogger(__name__)

LAST_CHECKPOINT = "last.pth.tar"
CONFIG_RECORD = "config.yaml"  # the config of the run that wrote the folder's checkpoints
POINTER_FILE = "checkpoint"  # Dassl's <folder>/<model>/checkpoint: names the latest model file

# Config keys (or key prefixes) that do not change what is learned: where files go, how much is
# printed, how data are loaded or how evaluation runs. Changing them never blocks a resume.
RUN_LOCAL_KEYS = (
    "OUTPUT_DIR",
    "RESUME",
    "VERBOSE",
    "USE_CUDA",
    "DATASET.ROOT",
    "DATALOADER.NUM_WORKERS",
    "DATALOADER.SKIP_BAD_IMAGES",
    "DATALOADER.TEST",
    "TRAIN.PRINT_FREQ",
    "TRAIN.CHECKPOINT_FREQ",
    "TRAIN.SKIP_NONFINITE",
    "TRAIN.MAX_CONSECUTIVE_SKIPS",
    "TRAIN.RESUME_UNCHECKED",
    "TEST",
)
# Under TEST, these change what a run saves and deploys (model-best or not), so they do block a resume.
LEARNED_TEST_KEYS = ("TEST.FINAL_MODEL", "TEST.NO_TEST")


class ConfigMismatchError(UserError, RuntimeError):
    """The output folder holds a run made with a different config (or one that cannot be checked)."""


class DataMismatchError(UserError, RuntimeError):
    """The output folder holds a run trained on other data (class names or split sizes)."""


def last_checkpoint_path(directory: str) -> str:
    return osp.join(directory, LAST_CHECKPOINT)


def holds_checkpoints(directory: str) -> bool:
    """Whether ``directory`` holds anything a training run would resume from."""
    if osp.isfile(last_checkpoint_path(directory)):
        return True
    if not osp.isdir(directory):
        return False
    return any(osp.isfile(osp.join(entry.path, POINTER_FILE)) for entry in os.scandir(directory) if entry.is_dir())


def loader_samplers(loader) -> list:
    """The sampler objects of a DataLoader that may carry random state (deduplicated, in order)."""
    found = []
    for obj in (
        getattr(loader, "sampler", None),
        getattr(loader, "batch_sampler", None),
        getattr(getattr(loader, "batch_sampler", None), "sampler", None),
    ):
        if obj is not None and all(obj is not seen for seen in found):
            found.append(obj)
    return found


def _sampler_state(sampler) -> Any:
    if hasattr(sampler, "state_dict"):
        return {"state_dict": sampler.state_dict()}
    generator = getattr(sampler, "generator", None)
    if isinstance(generator, torch.Generator):
        return {"generator": generator.get_state()}
    return None


def _restore_sampler_state(sampler, state: Any) -> None:
    if state is None:
        return
    if "state_dict" in state and hasattr(sampler, "load_state_dict"):
        sampler.load_state_dict(state["state_dict"])
    elif "generator" in state and isinstance(getattr(sampler, "generator", None), torch.Generator):
        sampler.generator.set_state(state["generator"])


def capture_rng_state(samplers: Iterable = ()) -> dict:
    """Snapshot of every random number generator a training step may draw from."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "samplers": [_sampler_state(s) for s in samplers],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["gpu"] = torch.cuda.get_rng_state_all()  # one generator per visible GPU
    return state


def restore_rng_state(state: dict, samplers: Iterable = ()) -> None:
    """Put every generator back to a snapshot taken by ``capture_rng_state``."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "gpu" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["gpu"])
    for sampler, sampler_state in zip(samplers, state.get("samplers", []), strict=False):
        _restore_sampler_state(sampler, sampler_state)


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        flat: dict[str, Any] = {}
        for key in sorted(node):
            flat.update(_flatten(node[key], f"{prefix}{key}."))
        return flat
    value = list(node) if isinstance(node, tuple) else node
    return {prefix[:-1]: value}


def _is_run_local(key: str) -> bool:
    if key in LEARNED_TEST_KEYS:
        return False
    # Method keys come from their config extensions (register_cfg_extension(run_local_keys=...)).
    return any(key == k or key.startswith(k + ".") for k in RUN_LOCAL_KEYS + run_local_keys())


def config_fingerprint(cfg: dict) -> tuple[str, dict[str, Any]]:
    """Hash of the config keys that shape what is learned, and those keys as a flat dict."""
    flat = {k: v for k, v in _flatten(cfg).items() if not _is_run_local(k)}
    blob = json.dumps(flat, sort_keys=True, default=repr)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16], flat


def _differences(saved: dict, current: dict, defaults: dict) -> list[str]:
    """``key: old -> new`` for each key of ``current`` whose value differs in ``saved``.

    A key ``saved`` lacks was added since that run was made: it held its default there. A key only
    ``saved`` has is one this code no longer reads, so it cannot change what is learned.
    """
    missing = "<absent>"
    diffs = []
    for k in sorted(current):
        old = saved.get(k, defaults.get(k, missing))
        if old != current[k]:
            diffs.append(f"{k}: {old!r} -> {current[k]!r}")
    return diffs


def _shown(diffs: list[str]) -> str:
    return "; ".join(diffs[:10]) + (f"; and {len(diffs) - 10} more" if len(diffs) > 10 else "")


def check_same_config(saved_flat: dict, current_flat: dict, path: str, defaults_flat: dict | None = None) -> None:
    """Raise ConfigMismatchError naming the differing keys when the run recorded at ``path`` had another config.

    Both are flat dicts from ``config_fingerprint``; ``defaults_flat`` fills keys one side lacks.
    """
    diffs = _differences(saved_flat, current_flat, defaults_flat or {})
    if diffs:
        raise ConfigMismatchError(
            f'Refusing to resume: "{path}" records a run made with a different config ({_shown(diffs)}). '
            "Use another --output-dir, or delete that folder to start over."
        )


def data_fingerprint(classnames: list[str], split_sizes: dict[str, int]) -> dict[str, Any]:
    """What a resumed run must find again: the class names in label order and the size of each split."""
    return {"classnames": list(classnames), "split_sizes": dict(split_sizes)}


def check_same_data(saved: dict | None, current: dict | None, path: str) -> None:
    """Raise DataMismatchError when the run saved at ``path`` was trained on other data."""
    if saved is None or current is None:  # saved before fingerprints existed, or a trainer without a DataManager
        return
    diffs = []
    old_names, new_names = saved["classnames"], current["classnames"]
    if old_names != new_names:
        if len(old_names) != len(new_names):
            diffs.append(f"{len(old_names)} classes -> {len(new_names)}")
        else:
            i = next(i for i, (a, b) in enumerate(zip(old_names, new_names)) if a != b)
            n = sum(a != b for a, b in zip(old_names, new_names))
            diffs.append(f"class {i} {old_names[i]!r} -> {new_names[i]!r} ({n} class name(s) differ)")
    old_sizes = saved["split_sizes"]
    diffs += [
        f"{split}: {old_sizes.get(split)} -> {n} images"
        for split, n in current["split_sizes"].items()
        if old_sizes.get(split) != n
    ]
    if diffs:
        raise DataMismatchError(
            f'Refusing to resume: "{path}" was trained on other data ({"; ".join(diffs)}). '
            "Check DATASET.ROOT, or use another --output-dir."
        )
