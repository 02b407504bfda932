"""Resuming a run: the folder's records, a trainer's rolling ``last`` checkpoint, where an epoch restarts.

``run_state.py`` says what the state and records hold and how two runs are compared; this module applies it
to a ``SimpleTrainer``: the check made before any data is built, the record of the content a run read
(``run.json``), the state saved after each epoch (or on a stop request mid-epoch), the resume that reads it
back (refused when the config, the data, a weight file or the precision changed), and the RNG replay of an
epoch resumed after step N.
"""
from __future__ import annotations

import contextlib
import logging
import os.path as osp

from yacs.config import CfgNode

from dassl.data.samplers import GlobalBatchSampler
from dassl.utils import (
    CheckpointMismatchError,
    CorruptCheckpointError,
    DiskFullError,
    atomic_torch_save,
    atomic_write_text,
    intact_checkpoints,
    load_checkpoint,
    read_checkpoint_pointer,
)

from .distributed import get_world_size, is_main_process
from .run_state import (
    CONFIG_RECORD,
    POINTER_FILE,
    RUN_RECORD,
    ConfigMismatchError,
    ContentMismatchError,
    capture_rng_state,
    check_same_config,
    check_same_data,
    config_fingerprint,
    data_content_differences,
    data_fingerprint,
    default_flat_config,
    holds_checkpoints,
    last_checkpoint_path,
    loader_samplers,
    precision_difference,
    read_run_record,
    restore_rng_state,
    weights_differences,
    weights_fingerprint,
    write_run_record,
)

__all__ = ["check_config_record", "check_resumable_config", "RunStateMixin", "WEIGHT_FILE_KEYS"]

logger = logging.getLogger(__name__)

# Config keys that may name a weight file the run loads; a trainer that resolves names (an OpenAI
# model name -> its cached file) says so in ``weight_files``.
WEIGHT_FILE_KEYS = ("MODEL.BACKBONE.NAME", "MODEL.INIT_WEIGHTS")
NOTHING_INTACT = "No intact checkpoint of this run remains: retrain (delete the folder, or use another --output-dir)."


def check_config_record(directory: str, cfg, warn_unchecked: bool = True) -> None:
    """Refuse to resume ``directory`` unless its config.yaml matches ``cfg`` in the keys that shape learning."""
    record = osp.join(directory, CONFIG_RECORD)
    if not osp.isfile(record):
        if cfg.TRAIN.get("RESUME_UNCHECKED", False):
            if warn_unchecked:
                logger.warning(f'WARNING: resuming "{directory}" without a config check: it has no {CONFIG_RECORD} '
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
    check_same_config(config_fingerprint(saved)[1], config_fingerprint(cfg)[1], record, default_flat_config())


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
    run_under_way = False  # True once the run passed its resume checks: from then on it may write checkpoints

    def weight_files(self) -> dict[str, str | None]:
        """The weight files this run loads, by the config key that names them (None: not a local file).

        Here: the value of each of ``WEIGHT_FILE_KEYS`` that is a path to a file. A trainer that loads
        weights by name overrides this to name the file the name resolves to.
        """
        files = {}
        for key in WEIGHT_FILE_KEYS:
            node = self.cfg
            for part in key.split("."):
                node = node.get(part, "") if hasattr(node, "get") else ""
            if isinstance(node, str) and node:
                files[key] = node if osp.isfile(node) else None
        return files

    def current_run_record(self) -> dict:
        """What this run reads, for ``run.json``: weight files' sha256, the data's content, the precision.

        Also the shape of every learned tensor, which records effective sizes (e.g. the context length a
        CTX_INIT sets, whatever N_CTX says).
        """
        dataset = getattr(getattr(self, "dm", None), "dataset", None)
        content = getattr(dataset, "content_fingerprint", None) if dataset is not None else None
        return {
            "weights": weights_fingerprint(self.weight_files()),
            "data": dict(content) if content else None,
            "precision": {
                "requested": getattr(self, "precision_requested", None),
                "resolved": getattr(self, "precision", None),
            },
            "learned": {
                name: {k: list(v.shape) for k, v in self._models[name].state_dict().items() if hasattr(v, "shape")}
                for name in self.get_model_names()
            },
        }

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
            "processes": get_world_size(),
        }
        atomic_torch_save(state, last_checkpoint_path(self.output_dir))
        self._saved_epochs = epochs_done

    def resume_run_if_exist(self, directory: str) -> int:
        """Resume from ``directory/last.pth.tar`` if present, else Dassl's per-model checkpoints.

        Anything resumed is first checked against ``directory/config.yaml`` and ``run.json``; a fresh
        start writes both into ``OUTPUT_DIR``, the records later resumes are checked against.
        """
        if not holds_checkpoints(directory):
            self._write_run_records()
            self.run_under_way = True
            return 0
        check_config_record(directory, self.cfg)
        path = last_checkpoint_path(directory)
        state = self._load_run_state(path, directory) if osp.isfile(path) else None
        if state is not None:
            if state.get("config") is not None:
                check_same_config(state["config"], config_fingerprint(self.cfg)[1], path, default_flat_config())
            check_same_data(state.get("data"), self.current_data_fingerprint(), path)
        record_found = self._check_run_record(directory)
        if state is not None:
            self._check_process_count(state.get("processes"), path)
        if not holds_checkpoints(self.output_dir):  # resuming another folder's run (RESUME) into a new one
            self._write_run_records()
        elif not record_found and is_main_process():
            write_run_record(self.output_dir, self.current_run_record())
        if state is None:
            try:
                epoch = self.resume_model_if_exist(directory)
            except CorruptCheckpointError as err:
                err.add_note(self._intact_per_model(directory))
                raise
            self.run_under_way = True
            return epoch
        names = self.get_model_names()
        if sorted(state["models"]) != sorted(names):
            raise CheckpointMismatchError(
                f'"{path}" holds models {sorted(state["models"])}, but this trainer registers {names}'
            )
        for name in names:
            saved = state["models"][name]
            try:
                self._models[name].load_state_dict(saved["state_dict"])
            except (KeyError, RuntimeError) as err:
                raise CheckpointMismatchError(f'"{path}" does not fit model {name}: {err}') from err
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
        self.run_under_way = True
        return epoch

    def _load_run_state(self, path: str, directory: str) -> dict:
        """``last.pth.tar``, verified; a damaged one is refused naming what is intact instead."""
        try:
            return load_checkpoint(path)
        except CorruptCheckpointError as err:
            err.add_note(self._intact_instead_of_last(directory))
            raise

    def _intact_instead_of_last(self, directory: str) -> str:
        """Which per-model checkpoints could be resumed instead of a damaged ``last.pth.tar``, or "retrain"."""
        files = []
        for name in self.get_model_names():
            folder = osp.join(directory, name)
            try:
                latest = read_checkpoint_pointer(folder) if osp.isfile(osp.join(folder, POINTER_FILE)) else None
            except Exception:  # noqa: BLE001 - an unreadable pointer is one more thing that is not intact
                latest = None
            if latest is None or latest not in intact_checkpoints(folder):
                return NOTHING_INTACT
            files.append(osp.join(folder, latest))
        shown = ", ".join(f'"{f}"' for f in files)
        return (
            f'Intact: {shown}; delete "{last_checkpoint_path(directory)}" to resume from '
            f"{'it' if len(files) == 1 else 'them'} (from the start of the epoch after it; not bit-identical to an "
            "uninterrupted run), or retrain."
        )

    def _intact_per_model(self, directory: str) -> str:
        """What is intact beside a damaged per-model checkpoint that a resume read."""
        found = {name: intact_checkpoints(osp.join(directory, name)) for name in self.get_model_names()}
        if not any(found.values()):
            return NOTHING_INTACT
        shown = "; ".join(f"{name}/: {', '.join(files) or 'none'}" for name, files in found.items())
        return (
            f"Intact: {shown}. Write the name of one into <model>/{POINTER_FILE} to resume from it, or retrain."
        )

    def _check_run_record(self, directory: str) -> bool:
        """Refuse to resume when a weight file, the data's content or the resolved precision differ from ``run.json``.

        Returns whether ``directory`` has a record; a folder without one (written before records existed)
        is resumed with a note, and gets one.
        """
        saved = read_run_record(directory)
        if saved is None:
            logger.info(
                f'Note: "{directory}" has no {RUN_RECORD} (written before runs recorded the content they read), '
                "so the backbone file, the data's content and the precision cannot be checked; this run records them"
            )
            return False
        current = self.current_run_record()
        diffs = weights_differences(saved.get("weights"), current["weights"])
        diffs += data_content_differences(saved.get("data"), current["data"])
        precision = precision_difference(saved.get("precision"), current["precision"])
        if precision:
            diffs.append(precision)
        if diffs:
            raise ContentMismatchError(
                f'Refusing to resume: "{osp.join(directory, RUN_RECORD)}" records a run that read other content '
                f"({'; '.join(diffs)}). Restore what it was trained with (or resume it where PREC resolves the "
                "same), or use another --output-dir."
            )
        return True

    def _epoch_batch_sizes(self, processes: int) -> list[int] | None:
        """The global batch sizes of one epoch with ``processes`` processes (None: not a global-batch loader)."""
        sampler = getattr(self.train_loader_x, "batch_sampler", None) if self.train_loader_x is not None else None
        for _ in range(3):  # a wrapper (e.g. one that seeds each sample) holds the batch sampler it draws from
            if isinstance(sampler, GlobalBatchSampler):
                break
            sampler = getattr(sampler, "batches", None) or getattr(sampler, "batch_sampler", None)
        if not isinstance(sampler, GlobalBatchSampler) or sampler.batch_size % processes:
            return None
        plan = GlobalBatchSampler(
            sampler.num_samples, sampler.batch_size, sampler.seed, sampler.drop_last, shuffle=False,
            world_size=processes,
        )
        return [len(batch) * processes for batch in plan]

    def _check_process_count(self, saved: int | None, path: str) -> None:
        """A run resumed with another number of processes: said once, refused when the epochs' batches change.

        The global batch (DATALOADER.TRAIN_X.BATCH_SIZE) and per-sample randomness make N processes train
        what one trains; only the order of the gradient sums changes. But the last, partial batch of an
        epoch is cut to a multiple of the process count, so the data trained can change: then refused.
        """
        current = get_world_size()
        if saved is None or saved == current:
            return
        before, after = self._epoch_batch_sizes(saved), self._epoch_batch_sizes(current)
        if before is not None and after is not None and before != after:
            raise ContentMismatchError(
                f'Refusing to resume: "{path}" was trained by {saved} process(es) and this run has {current}: the '
                "last, partial batch of an epoch is cut to a multiple of the process count, so each epoch would "
                f"train {sum(after)} images instead of {sum(before)}. Resume it with {saved} process(es) "
                f"(torchrun --nproc_per_node {saved}), or use another --output-dir."
            )
        logger.warning(
            f'WARNING: resuming "{path}", trained so far by {saved} process(es), with {current}: every step trains '
            "the same global batch, but gradients are summed in another order, so the weights will not be "
            "bit-identical to those of an uninterrupted run"
        )

    def _write_run_records(self) -> None:
        """``config.yaml`` and ``run.json`` of a run starting in OUTPUT_DIR (rank 0)."""
        if is_main_process():
            atomic_write_text(osp.join(self.output_dir, CONFIG_RECORD), self.cfg.dump())
            write_run_record(self.output_dir, self.current_run_record())

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
