"""Resuming a run: the folder's config record, a trainer's rolling ``last`` checkpoint, where an epoch restarts.

``run_state.py`` says what the state holds and how two runs are compared; this module applies it to a
``SimpleTrainer``: the check made before any data is built, the state saved after each epoch (or on a stop
request mid-epoch), the resume that reads it back, and the RNG replay of an epoch resumed after step N.
"""
from __future__ import annotations

import contextlib
import logging
import os.path as osp

from yacs.config import CfgNode

from dassl.config import get_cfg_default
from dassl.utils import DiskFullError, atomic_torch_save, atomic_write_text, load_checkpoint

from .distributed import is_main_process
from .run_state import (
    CONFIG_RECORD,
    ConfigMismatchError,
    capture_rng_state,
    check_same_config,
    check_same_data,
    config_fingerprint,
    data_fingerprint,
    holds_checkpoints,
    last_checkpoint_path,
    loader_samplers,
    restore_rng_state,
)

__all__ = ["check_config_record", "check_resumable_config", "RunStateMixin"]

logger = logging.getLogger(__name__)


def _default_flat() -> dict:
    """The default config as flat keys: the value a key had in a run recorded before the key existed."""
    return config_fingerprint(get_cfg_default())[1]


def check_config_record(directory: str, cfg, warn_unchecked: bool = True) -> None:
    """Refuse to resume ``directory`` unless its config.yaml matches ``cfg`` in the keys that shape learning."""
    record = osp.join(directory, CONFIG_RECORD)
    if not osp.isfile(record):
        if cfg.TRAIN.get("RESUME_UNCHECKED", False):
            if warn_unchecked:
                logger.warning(f'Resuming "{directory}" without a config check: it has no {CONFIG_RECORD} '
                               "(TRAIN.RESUME_UNCHECKED True)")
            return
        raise ConfigMismatchError(
            f'Refusing to resume: "{directory}" holds checkpoints but no {CONFIG_RECORD} to check this '
            "config against (a folder written by upstream Dassl?). Set TRAIN.RESUME_UNCHECKED True to "
            "resume it anyway, or use another --output-dir."
        )
    try:
        with open(record) as f:
            saved = CfgNode.load_cfg(f)
    except Exception as err:  # noqa: BLE001 - any unreadable record means "cannot check"
        raise ConfigMismatchError(f'Refusing to resume: cannot read "{record}" ({err})') from err
    check_same_config(config_fingerprint(saved)[1], config_fingerprint(cfg)[1], record, _default_flat())


def check_resumable_config(cfg) -> None:
    """Refuse a training run that would resume a folder made with another config, before any data is built.

    Building the data may regenerate a shared tree (``DATASET.WORLD.*``), so a refused run must stop first.
    It checks what ``RunStateMixin.resume_run_if_exist`` checks first: ``RESUME`` (else ``OUTPUT_DIR``)
    against its config.yaml when it holds checkpoints; the data fingerprint is checked there, with the data.
    """
    directory = cfg.RESUME or cfg.OUTPUT_DIR
    if holds_checkpoints(directory):
        check_config_record(directory, cfg, warn_unchecked=False)  # the resume itself warns


class RunStateMixin:
    """The run state of a ``SimpleTrainer``: saving ``OUTPUT_DIR/last.pth.tar`` and resuming from it.

    Mixed into ``SimpleTrainer``; reads its config, output folder, registered models, grad scaler and results.
    """

    _resume_point = None  # (epoch, steps done, epoch-start RNG, RNG) for a mid-epoch resume
    _epoch_start_rng = None  # the RNG state before this epoch's loader drew its order
    _saved_epochs = None  # epochs done in the last run state saved (or resumed from)

    def current_data_fingerprint(self) -> dict | None:
        """Class names and split sizes of the data this trainer was built on (None without a DataManager)."""
        dataset = getattr(getattr(self, "dm", None), "dataset", None)
        if dataset is None:
            return None
        classnames = [name for _, name in sorted(self.lab2cname.items())]
        sizes = {split: len(getattr(dataset, split, None) or []) for split in ("train_x", "train_u", "val", "test")}
        return data_fingerprint(classnames, sizes)

    def _samplers(self) -> list:
        return loader_samplers(self.train_loader_x) if self.train_loader_x is not None else []

    def save_run_state(self, epochs_done: int, steps_done: int = 0) -> None:
        """Write ``OUTPUT_DIR/last.pth.tar`` (rank 0, atomically).

        ``epochs_done`` epochs are complete, plus ``steps_done`` steps of the next one.
        """
        if not is_main_process():
            return
        config_hash, config_flat = config_fingerprint(self.cfg)
        state = {
            "epoch": epochs_done,
            "steps_done": steps_done,
            "models": {
                name: {
                    "state_dict": self._models[name].state_dict(),
                    "optimizer": self._optims[name].state_dict() if self._optims[name] is not None else None,
                    "scheduler": self._scheds[name].state_dict() if self._scheds[name] is not None else None,
                }
                for name in self.get_model_names()
            },
            "best_result": self.best_result,
            "nonfinite_skipped": self.nonfinite_skipped,
            "grad_scaler": self.grad_scaler.state_dict() if self.grad_scaler is not None else None,
            "rng": capture_rng_state(self._samplers()),
            "epoch_start_rng": self._epoch_start_rng if steps_done else None,
            "config_hash": config_hash,
            "config": config_flat,
            "data": self.current_data_fingerprint(),
        }
        atomic_torch_save(state, last_checkpoint_path(self.output_dir))
        self._saved_epochs = epochs_done

    def resume_run_if_exist(self, directory: str) -> int:
        """Resume from ``directory/last.pth.tar`` if present, else Dassl's per-model checkpoints.

        Anything resumed is first checked against ``directory/config.yaml``; a fresh start writes
        ``OUTPUT_DIR/config.yaml``, the record later resumes are checked against.
        """
        if not holds_checkpoints(directory):
            self._write_config_record()
            return 0
        check_config_record(directory, self.cfg)
        if not holds_checkpoints(self.output_dir):  # resuming another folder's run (RESUME) into a new one
            self._write_config_record()
        path = last_checkpoint_path(directory)
        if not osp.isfile(path):
            return self.resume_model_if_exist(directory)
        state = load_checkpoint(path)
        if state.get("config") is not None:
            check_same_config(state["config"], config_fingerprint(self.cfg)[1], path, _default_flat())
        check_same_data(state.get("data"), self.current_data_fingerprint(), path)
        names = self.get_model_names()
        if sorted(state["models"]) != sorted(names):
            raise KeyError(f'"{path}" holds models {sorted(state["models"])}, but this trainer registers {names}')
        for name in names:
            saved = state["models"][name]
            self._models[name].load_state_dict(saved["state_dict"])
            if self._optims[name] is not None and saved["optimizer"] is not None:
                self._optims[name].load_state_dict(saved["optimizer"])
            if self._scheds[name] is not None and saved["scheduler"] is not None:
                self._scheds[name].load_state_dict(saved["scheduler"])
        if self.grad_scaler is not None and state.get("grad_scaler"):
            self.grad_scaler.load_state_dict(state["grad_scaler"])
        self.best_result = state["best_result"]
        self.nonfinite_skipped = state.get("nonfinite_skipped", 0)
        epoch, steps = state["epoch"], state["steps_done"]
        self._saved_epochs = epoch
        if steps:
            self._resume_point = (epoch, steps, state["epoch_start_rng"], state["rng"])
            logger.info(f'Resuming from "{path}": epoch {epoch + 1}, after step {steps}')
        else:
            restore_rng_state(state["rng"], self._samplers())
            logger.info(f'Resuming from "{path}": {epoch} epoch(s) done')
        return epoch

    def _write_config_record(self) -> None:
        if is_main_process():
            atomic_write_text(osp.join(self.output_dir, CONFIG_RECORD), self.cfg.dump())

    def _start_epoch_rng(self) -> tuple[int, dict | None]:
        """(steps of this epoch a mid-epoch resume skips, the RNG state to restore after the last of them).

        Also snapshots the RNG before the loader draws its order, so a later mid-epoch resume can replay it.
        """
        skip, resume_rng = 0, None
        if self._resume_point is not None and self._resume_point[0] == self.epoch:
            _, skip, epoch_start_rng, resume_rng = self._resume_point
            restore_rng_state(epoch_start_rng, self._samplers())
        self._resume_point = None
        self._epoch_start_rng = capture_rng_state(self._samplers())
        return skip, resume_rng

    def _restore_rng(self, state: dict) -> None:
        restore_rng_state(state, self._samplers())

    @contextlib.contextmanager
    def _explain_disk_full(self):
        """Add to a full-disk error which checkpoint survived and how to go on."""
        try:
            yield
        except DiskFullError as err:
            last = last_checkpoint_path(self.output_dir)
            if self._saved_epochs is not None and osp.isfile(last):
                kept = f'the previous checkpoint "{last}" ({self._saved_epochs} epoch(s) done) is intact'
            else:
                kept = "no earlier checkpoint of this run exists"
            raise DiskFullError(f"{err}; {kept}. Free some space and run the same command again.") from err

    def _checkpoint_note(self) -> str:
        last = last_checkpoint_path(self.output_dir)
        return f'the last good checkpoint "{last}" is untouched' if osp.isfile(last) else "no checkpoint was written"
