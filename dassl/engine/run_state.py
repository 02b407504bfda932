"""The rolling ``last`` checkpoint: everything needed to continue a run exactly where it stopped.

It holds every registered model, optimizer and scheduler, the epoch and step reached, the best
result, the RNG states of python, numpy, torch (and the sampler), and a hash of the config so
that a run never resumes from a folder trained with a different config.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os.path as osp
import random
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from dassl.config import run_local_keys

__all__ = [
    "LAST_CHECKPOINT",
    "RUN_LOCAL_KEYS",
    "ConfigMismatchError",
    "capture_rng_state",
    "restore_rng_state",
    "loader_samplers",
    "config_fingerprint",
    "check_same_config",
    "last_checkpoint_path",
]

logger = logging.getLogger(__name__)

LAST_CHECKPOINT = "last.pth.tar"

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
    "TRAIN.MEMORY_BUDGET_GB",
    "TEST",
)
# Under TEST, these change what a run saves and deploys (model-best or not), so they do block a resume.
LEARNED_TEST_KEYS = ("TEST.FINAL_MODEL", "TEST.NO_TEST")


class ConfigMismatchError(RuntimeError):
    """The output folder holds a run made with a different config."""


def last_checkpoint_path(directory: str) -> str:
    return osp.join(directory, LAST_CHECKPOINT)


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


def check_same_config(saved: dict, current_hash: str, current_flat: dict, path: str) -> None:
    """Raise ConfigMismatchError naming the differing keys when ``saved`` came from another config."""
    saved_hash = saved.get("config_hash")
    if saved_hash is None or saved_hash == current_hash:
        return
    saved_flat = saved.get("config") or {}
    keys = sorted(set(saved_flat) | set(current_flat))
    diffs = [
        f"{k}: {saved_flat.get(k, '<absent>')!r} -> {current_flat.get(k, '<absent>')!r}"
        for k in keys
        if saved_flat.get(k, "<absent>") != current_flat.get(k, "<absent>")
    ]
    shown = "; ".join(diffs[:10]) + (f"; and {len(diffs) - 10} more" if len(diffs) > 10 else "")
    raise ConfigMismatchError(
        f'Refusing to resume: "{path}" holds a run made with a different config ({shown}). '
        "Use another --output-dir, or delete that folder to start over."
    )
