"""What a run folder records, and how two runs are compared.

The rolling ``last`` checkpoint holds everything needed to continue a run exactly where it stopped:
every registered model, optimizer and scheduler, the epoch and step reached, the best result, the
RNG states of python, numpy, torch (and the sampler), the number of processes, the config, and a
fingerprint of the data (class names, split sizes). ``config.yaml`` is the config of the run that
wrote the folder; ``run.json`` records the content the run read: a sha256 of each weight file
(the backbone), the dataset's content fingerprint, and the precision ``PREC`` resolved to. A run
never resumes from a folder trained with another config (compared with ``config.yaml`` whatever
checkpoint is resumed), other data, another backbone file or another precision.
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

from dassl.config import get_cfg_default, run_local_keys
from dassl.utils import atomic_write_text
from dassl.utils.errors import UserError
from dassl.utils.torchtools import POINTER_FILE

__all__ = [
    "LAST_CHECKPOINT",
    "CONFIG_RECORD",
    "RUN_LOCAL_KEYS",
    "RUN_RECORD",
    "POINTER_FILE",
    "ConfigMismatchError",
    "DataMismatchError",
    "ContentMismatchError",
    "capture_rng_state",
    "restore_rng_state",
    "loader_samplers",
    "config_fingerprint",
    "check_same_config",
    "config_differences",
    "default_flat_config",
    "data_fingerprint",
    "check_same_data",
    "last_checkpoint_path",
    "holds_checkpoints",
    "model_shaping_keys",
    "file_sha256",
    "weights_fingerprint",
    "read_run_record",
    "write_run_record",
    "weights_differences",
    "data_content_differences",
    "precision_difference",
]

logger = logging.getLogger(__name__)

LAST_CHECKPOINT = "last.pth.tar"
CONFIG_RECORD = "config.yaml"  # the config of the run that wrote the folder's checkpoints
RUN_RECORD = "run.json"  # the content that run read: weight files' sha256, the data's fingerprint, the precision

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


class ContentMismatchError(UserError, RuntimeError):
    """The output folder holds a run that read other content: another backbone file, data or precision."""


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


def default_flat_config() -> dict[str, Any]:
    """The default config as flat learned keys: the value a key had in a run recorded before the key existed."""
    return config_fingerprint(get_cfg_default())[1]


def config_differences(saved: dict, current: dict, defaults: dict) -> list[str]:
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


def shown_differences(diffs: list[str]) -> str:
    return "; ".join(diffs[:10]) + (f"; and {len(diffs) - 10} more" if len(diffs) > 10 else "")


def check_same_config(saved_flat: dict, current_flat: dict, path: str, defaults_flat: dict | None = None) -> None:
    """Raise ConfigMismatchError naming the differing keys when the run recorded at ``path`` had another config.

    Both are flat dicts from ``config_fingerprint``; ``defaults_flat`` fills keys one side lacks.
    """
    diffs = config_differences(saved_flat, current_flat, defaults_flat or {})
    if diffs:
        raise ConfigMismatchError(
            f'Refusing to resume: "{path}" records a run made with a different config ({shown_differences(diffs)}). '
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


def model_shaping_keys(flat: dict[str, Any], trainer_node: str) -> dict[str, Any]:
    """The keys of a flat learned config (``config_fingerprint``) that decide what a saved model's weights mean.

    The trainer, its own ``TRAINER.<node>`` keys and ``MODEL.*``: what builds the model that a checkpoint
    is loaded into. Its ``PREC`` says how the arithmetic runs, not what the weights are; the data keys
    and the optimisation (``DATASET.*``, ``OPTIM.*``, ``SEED``...) say what a model was trained on and
    how, and an evaluation may change them (base -> new classes, another dataset).
    """
    own = f"TRAINER.{trainer_node}."
    return {
        k: v for k, v in flat.items()
        if k == "TRAINER.NAME" or k.startswith("MODEL.") or (k.startswith(own) and k != own + "PREC")
    }


_digests: dict[tuple[str, int, int], str] = {}  # (real path, size, mtime_ns) -> sha256, for this process


def file_sha256(path: str) -> str:
    """sha256 (hex) of a file's bytes; a file unchanged since this process hashed it is not read again."""
    real = osp.realpath(path)
    stat = os.stat(real)
    key = (real, stat.st_size, stat.st_mtime_ns)
    if key not in _digests:
        digest = hashlib.sha256()
        with open(real, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                digest.update(block)
        _digests[key] = digest.hexdigest()
    return _digests[key]


def weights_fingerprint(files: dict[str, str | None]) -> dict[str, dict[str, str | None]]:
    """``{config key: {"file": path, "sha256": digest}}`` for the weight files a run loads.

    A key whose weights come from no local file this process can name (e.g. an open_clip download it
    cannot locate) gets ``None`` for both: it is then compared by its config value alone.
    """
    found = {key: path for key, path in files.items() if path and osp.isfile(path)}
    return {
        key: {"file": found[key], "sha256": file_sha256(found[key])} if key in found else {"file": None, "sha256": None}
        for key in files
    }


def read_run_record(directory: str) -> dict | None:
    """The ``run.json`` of ``directory`` (None when it has none, e.g. a folder written before it existed)."""
    path = osp.join(directory, RUN_RECORD)
    if not osp.isfile(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as err:
        raise ContentMismatchError(
            f'Cannot read the run record "{path}" ({err}); delete it to skip its checks'
        ) from err


def write_run_record(directory: str, record: dict) -> None:
    atomic_write_text(osp.join(directory, RUN_RECORD), json.dumps(record, indent=1, sort_keys=True) + "\n")


def _short(digest: str | None) -> str:
    return "none" if digest is None else digest[:12]


def weights_differences(saved: dict | None, current: dict | None) -> list[str]:
    """``KEY ("file"): sha256 old -> new`` for each weight file whose content differs from the recorded one."""
    diffs = []
    for key, now in (current or {}).items():
        then = (saved or {}).get(key)
        if then is None or then.get("sha256") is None or now.get("sha256") is None:
            continue  # not recorded, or not a local file on one side: the config value alone is compared
        if then["sha256"] != now["sha256"]:
            diffs.append(
                f'the file of {key} ("{now["file"]}") has other content: sha256 {_short(then["sha256"])}... '
                f"-> {_short(now['sha256'])}..."
            )
    return diffs


_DATA_PARTS = {  # content_fingerprint part -> what it is, for the message
    "split": "the split file's entries",
    "train_x": "the training images (the few-shot draw)",
    "val": "the validation images",
    "test": "the test images",
}


def data_content_differences(saved: dict | None, current: dict | None, parts=tuple(_DATA_PARTS)) -> list[str]:
    """One line per part of the dataset's ``content_fingerprint`` that differs (a part one side lacks is skipped)."""
    if not saved or not current:
        return []
    return [
        f"{_DATA_PARTS.get(part, part)} changed (sha256 {_short(saved[part])}... -> {_short(current[part])}...)"
        for part in parts
        if part in saved and part in current and saved[part] != current[part]
    ]


def precision_difference(saved: dict | None, current: dict | None) -> str | None:
    """``precision: bf16 -> fp32 (...)`` when the resolved precision differs from the recorded one."""
    if not saved or not current or saved.get("resolved") == current.get("resolved"):
        return None
    return (
        f"precision: the run computed in {saved.get('resolved')} (PREC {saved.get('requested')}), this one in "
        f"{current.get('resolved')} (PREC {current.get('requested')} on this machine)"
    )
