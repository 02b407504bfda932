"""The trainer lifecycle: ``TrainerBase`` -> ``SimpleTrainer`` -> ``TrainerX`` (Dassl 0.6.3 behaviour).

Additions over upstream (docs/INTERNALS.md): named-loss trainers (``forward_train``), an
``inference`` hook, precision handling, torch.distributed, a rolling ``last`` checkpoint with
exact resume (refused when the config or the data changed), graceful SIGINT/SIGTERM, and a
non-finite loss check that names epoch and step. The run state and its resume live in ``resume.py``
(``RunStateMixin``), evaluation in ``testing.py`` (``EvaluationMixin``), the choice and loading of a saved
model in ``evaluate.py``.
"""
from __future__ import annotations

import datetime
import logging
import os.path as osp
import time
from collections import OrderedDict

import numpy as np
import torch
import torch.nn as nn
from tqdm import tqdm

from dassl.config.validate import check_engine_config
from dassl.data import DataManager
from dassl.data.data_manager import bad_image_count, reset_bad_image_count
from dassl.evaluation import build_evaluator
from dassl.utils import (
    AverageMeter,
    NonFiniteError,
    mkdir_if_missing,
    resume_from_checkpoint,
    save_checkpoint,
    tolist_if_not,
)

from . import evaluate
from .build import trainer_config_node
from .distributed import (
    all_reduce_gradients,
    any_across_ranks,
    broadcast_module,
    is_main_process,
    progress_disabled,
    select_device,
)
from .interrupt import StopRequest
from .precision import autocast_context, build_grad_scaler, ieee_fp32, requested_precision, resolve_precision
from .ranks import StepTerms, describe_ranks
from .resume import RunStateMixin, check_resumable_config
from .run_state import holds_checkpoints, last_checkpoint_path
from .testing import EvaluationMixin

__all__ = ["TrainerBase", "SimpleTrainer", "TrainerX", "check_resumable_config"]

logger = logging.getLogger(__name__)

def _batch_images(batch) -> int:
    """The number of images of a training batch on this rank (its labels'), 1 when it cannot be told."""
    if isinstance(batch, dict):
        for key in ("label", "img"):
            if torch.is_tensor(batch.get(key)):
                return int(batch[key].shape[0])
    return 1


class TrainerBase:
    """Registered models/optimizers/schedulers, checkpoints and the epoch loop."""

    EVAL_ONLY = False  # True: nothing is learned (zero-shot); run it with --eval-only
    # Buffers rebuilt for the current class set (e.g. class-name token embeddings): never loaded from a checkpoint.
    CLASS_SET_KEYS: tuple[str, ...] = ()

    def __init__(self):
        self._models = OrderedDict()
        self._optims = OrderedDict()
        self._scheds = OrderedDict()
        self._writer = None

    def register_model(self, name: str = "model", model: nn.Module | None = None, optim=None, sched=None):
        if self.__dict__.get("_models") is None:
            raise AttributeError("Cannot assign model before super().__init__() call")
        if self.__dict__.get("_optims") is None:
            raise AttributeError("Cannot assign optim before super().__init__() call")
        if self.__dict__.get("_scheds") is None:
            raise AttributeError("Cannot assign sched before super().__init__() call")
        assert name not in self._models, f'Found duplicate model name "{name}"'
        self._models[name] = model
        self._optims[name] = optim
        self._scheds[name] = sched

    def has_learned_modules(self) -> bool:
        """Whether any registered model has an optimizer, i.e. training changes what is evaluated."""
        return any(optim is not None for optim in self._optims.values())

    def get_model_names(self, names=None) -> list[str]:
        names_real = list(self._models.keys())
        if names is None:
            return names_real
        names = tolist_if_not(names)
        for name in names:
            assert name in names_real, f'Model "{name}" is not registered; registered: {names_real}'
        return names

    def save_model(self, epoch: int, directory: str, is_best: bool = False, val_result=None, model_name: str = ""):
        if not is_main_process():
            return
        for name in self.get_model_names():
            optim, sched = self._optims[name], self._scheds[name]
            state = {
                "state_dict": self._models[name].state_dict(),
                "epoch": epoch + 1,
                "optimizer": optim.state_dict() if optim is not None else None,
                "scheduler": sched.state_dict() if sched is not None else None,
                "val_result": val_result,
            }
            save_checkpoint(state, osp.join(directory, name), is_best=is_best, model_name=model_name)

    def resume_model_if_exist(self, directory: str) -> int:
        names = self.get_model_names()
        if not all(osp.exists(osp.join(directory, name, "checkpoint")) for name in names):
            logger.info("No checkpoint found, train from scratch")
            return 0
        logger.info(f'Found checkpoint at "{directory}" (will resume training)')
        start_epoch = 0
        for name in names:
            start_epoch = resume_from_checkpoint(
                osp.join(directory, name), self._models[name], self._optims[name], self._scheds[name]
            )
        return start_epoch

    def load_model(self, directory: str, epoch: int | None = None) -> None:
        """Load model-best (or the file of ``epoch``) of every registered model from ``directory``."""
        evaluate.load_saved_weights(self, directory, epoch)

    def latest_saved_epoch(self, directory: str) -> int | None:
        """The epoch of the file named in ``directory/<name>/checkpoint`` (None for model-best)."""
        return evaluate.latest_saved_epoch(self, directory)

    def set_model_mode(self, mode: str = "train", names=None) -> None:
        for name in self.get_model_names(names):
            if mode == "train":
                self._models[name].train()
            elif mode in ("test", "eval"):
                self._models[name].eval()
            else:
                raise KeyError(f'Unknown model mode "{mode}"; use "train", "test" or "eval"')

    def update_lr(self, names=None) -> None:
        for name in self.get_model_names(names):
            if self._scheds[name] is not None:
                self._scheds[name].step()

    def detect_anomaly(self, loss: torch.Tensor) -> None:
        if not torch.isfinite(loss).all():
            where = ""
            if hasattr(self, "batch_idx") and hasattr(self, "num_batches"):
                where = (
                    f" (epoch {self.epoch + 1}/{self.max_epoch}, "
                    f"batch {self.batch_idx + 1}/{self.num_batches}, loss {loss.detach().tolist()})"
                )
            raise NonFiniteError(f"Loss is infinite or NaN!{where}")

    def init_writer(self, log_dir: str) -> None:
        if self.__dict__.get("_writer") is not None:
            return
        try:  # imported lazily: a broken tensorboard install must not stop training
            from torch.utils.tensorboard import SummaryWriter
        except Exception as e:  # noqa: BLE001 - any import failure means "no tensorboard"
            logger.warning(f"TensorBoard is unavailable ({e}); scalars will not be written")
            return
        logger.info(f"Initialize tensorboard (log_dir={log_dir})")
        self._writer = SummaryWriter(log_dir=log_dir)

    def close_writer(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def write_scalar(self, tag: str, scalar_value, global_step=None) -> None:
        if self._writer is None:
            return
        self._writer.add_scalar(tag, scalar_value, global_step)

    def train(self, start_epoch: int, max_epoch: int) -> None:
        """The generic loop; ``before_train`` may move ``start_epoch`` (resume)."""
        self.start_epoch = start_epoch
        self.max_epoch = max_epoch
        self.before_train()
        for self.epoch in range(self.start_epoch, self.max_epoch):  # noqa: B020  (Dassl exposes self.epoch)
            self.before_epoch()
            self.run_epoch()
            self.after_epoch()
        self.after_train()

    def before_train(self):
        pass

    def after_train(self):
        pass

    def before_epoch(self):
        pass

    def after_epoch(self):
        pass

    def run_epoch(self):
        raise NotImplementedError

    def test(self):
        raise NotImplementedError

    def parse_batch_train(self, batch):
        raise NotImplementedError

    def parse_batch_test(self, batch):
        raise NotImplementedError

    def forward_backward(self, batch):
        raise NotImplementedError

    def model_inference(self, input):
        raise NotImplementedError

    def _registered_params(self, names=None) -> list[nn.Parameter]:
        return [p for name in self.get_model_names(names) for p in self._models[name].parameters()]

    def model_zero_grad(self, names=None) -> None:
        for name in self.get_model_names(names):
            if self._optims[name] is not None:
                self._optims[name].zero_grad()

    def model_backward(self, loss: torch.Tensor) -> None:
        self.detect_anomaly(loss)
        loss.backward()
        all_reduce_gradients(self._registered_params())

    def model_update(self, names=None) -> None:
        for name in self.get_model_names(names):
            if self._optims[name] is not None:
                self._optims[name].step()

    def model_backward_and_update(self, loss: torch.Tensor, names=None) -> None:
        self.model_zero_grad(names)
        self.model_backward(loss)
        self.model_update(names)


class SimpleTrainer(RunStateMixin, EvaluationMixin, TrainerBase):
    """Data, model, evaluator, auto-resume, checkpoints and evaluation for one labelled dataset."""

    # The trainer's config node, cfg.TRAINER.<CFG_NODE> (its PREC sets the precision); "" = TRAINER.NAME upper-cased.
    CFG_NODE = ""

    def __init__(self, cfg):
        super().__init__()
        check_engine_config(cfg)
        self.check_cfg(cfg)
        self.device = self._select_device(cfg)
        self.start_epoch = self.epoch = 0
        self.max_epoch = cfg.OPTIM.MAX_EPOCH
        self.output_dir = cfg.OUTPUT_DIR
        self.cfg = cfg
        self._setup_precision(cfg)
        self.build_data_loader()
        self.build_model()
        for model in self._models.values():
            broadcast_module(model)  # every rank starts from rank 0's weights
        self._log_ranks(cfg)
        self.evaluator = build_evaluator(cfg, lab2cname=self.lab2cname)
        self.best_result = -np.inf
        evaluate.check_final_model(cfg, has_val=self.val_loader is not None)
        self._stop = StopRequest()
        self._engine_stepped = False  # True once the named-loss path ran this epoch
        self.nonfinite_skipped = 0
        self._consecutive_skips = 0  # steps in a row skipped for a non-finite loss
        self._epoch_skips = 0

    @staticmethod
    def _select_device(cfg) -> torch.device:
        device = select_device(bool(cfg.USE_CUDA))
        if device.type != "cpu":
            torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick the fastest kernels
        return device

    def check_cfg(self, cfg):
        """Hook for trainers to assert on the config before anything is built."""

    def _log_ranks(self, cfg) -> None:
        """Say once, at start, how a distributed run splits its work (every rank takes part; rank 0 logs)."""
        line = describe_ranks(self.device, cfg.DATALOADER.TRAIN_X.BATCH_SIZE, cfg.DATALOADER.TEST.BATCH_SIZE)
        if line:
            logger.info(line)

    def build_data_loader(self, custom_tfm_train=None, custom_tfm_test=None):
        """Build the DataManager and expose its loaders; trainers pass their own transforms (e.g. views)."""
        dm = DataManager(self.cfg, custom_tfm_train=custom_tfm_train, custom_tfm_test=custom_tfm_test)
        self.train_loader_x = dm.train_loader_x
        self.train_loader_u = dm.train_loader_u
        self.val_loader = dm.val_loader
        self.test_loader = dm.test_loader
        self.num_classes = dm.num_classes
        self.num_source_domains = dm.num_source_domains
        self.lab2cname = dm.lab2cname
        self.dm = dm

    def build_model(self):
        raise NotImplementedError(
            f"{type(self).__name__} must implement build_model() and register its modules "
            "with self.register_model(name, model, optim, sched)"
        )

    def _setup_precision(self, cfg) -> None:
        """Resolve the trainer's PREC once, before anything is built: ``self.precision`` and the grad scaler."""
        node = trainer_config_node(cfg.TRAINER.NAME, type(self))
        self.precision_requested, key = requested_precision(cfg, node)
        if key:
            self.precision = resolve_precision(self.precision_requested, self.device)
        else:
            self.precision = "fp32"
            logger.info(f"Precision: fp32 (no TRAINER.{node}.PREC key; set {type(self).__name__}.CFG_NODE to its node)")
        self.grad_scaler = build_grad_scaler(self.precision, self.device)
        if ieee_fp32(self.precision, self.device):
            logger.info("Precision: TF32 off (IEEE fp32 matrix products and cuDNN convolutions)")

    def autocast(self):
        """Autocast matching ``self.precision`` (a null context for fp32)."""
        return autocast_context(self.precision, self.device)

    # ----- lifecycle -----

    def train(self):
        try:
            super().train(self.start_epoch, self.max_epoch)
        finally:
            self._stop.uninstall()
            self.close_writer()

    def before_train(self):
        directory = self.cfg.RESUME or self.output_dir
        fresh_start = not holds_checkpoints(directory)
        self.start_epoch = self.resume_run_if_exist(directory)
        if is_main_process():
            writer_dir = osp.join(self.output_dir, "tensorboard")
            mkdir_if_missing(writer_dir)
            self.init_writer(writer_dir)
        if self.cfg.TEST.AT_START:
            if fresh_start:
                self.test_at_start()
            else:
                logger.info(
                    "TEST.AT_START: no evaluation at initialisation, the run resumes (the accuracy at "
                    "initialisation is in the log of its first attempt)"
                )
        self._stop.install()
        self.time_start = time.time()

    def after_epoch(self):
        last_epoch = (self.epoch + 1) == self.max_epoch
        do_test = not self.cfg.TEST.NO_TEST
        freq = self.cfg.TRAIN.CHECKPOINT_FREQ
        meet_checkpoint_freq = (self.epoch + 1) % freq == 0 if freq > 0 else False

        with self._explain_disk_full():
            if do_test and self.cfg.TEST.FINAL_MODEL == "best_val":
                curr_result = self.test(split="val")
                if curr_result > self.best_result:
                    self.best_result = curr_result
                    self.save_model(
                        self.epoch, self.output_dir, val_result=curr_result, model_name="model-best.pth.tar"
                    )
            if meet_checkpoint_freq or last_epoch:
                self.save_model(self.epoch, self.output_dir)
            self.save_run_state(epochs_done=self.epoch + 1)
        if self._stop_requested():
            self._raise_interrupted(f"after epoch {self.epoch + 1}/{self.max_epoch}")

    def after_train(self):
        logger.info("Finish training")
        if self.nonfinite_skipped:
            logger.warning(f"WARNING: skipped {self.nonfinite_skipped} step(s) with a non-finite loss")
        if not self.cfg.TEST.NO_TEST:
            if self.cfg.TEST.FINAL_MODEL == "best_val":
                logger.info("Deploy the model with the best val performance")
                self.load_model(self.output_dir)
            else:
                logger.info("Deploy the last-epoch model")
            self.test()
        elapsed = round(time.time() - self.time_start)
        logger.info(f"Elapsed: {datetime.timedelta(seconds=elapsed)}")
        self.close_writer()

    # ----- stop requests and non-finite losses -----

    def _stop_requested(self) -> bool:
        return any_across_ranks(self._stop.requested, self.device)

    def _raise_interrupted(self, where: str):
        raise self._stop.interrupted(where, last_checkpoint_path(self.output_dir))

    def get_current_lr(self, names=None) -> float:
        """The lr of the first registered model's optimizer (0.0 when there is none)."""
        names = self.get_model_names(names)
        if not names or self._optims[names[0]] is None:
            return 0.0
        return self._optims[names[0]].param_groups[0]["lr"]

    # ----- the named-loss step -----

    def forward_backward(self, batch):
        if not callable(getattr(self, "forward_train", None)):
            raise NotImplementedError(
                f"{type(self).__name__} must implement forward_train(batch) -> dict of losses "
                "(or override forward_backward)"
            )
        return self.named_loss_step(batch)

    def named_loss_step(self, batch) -> dict[str, float]:
        """One optimisation step for a trainer that returns named losses from ``forward_train``."""
        self._engine_stepped = True
        names = self.get_model_names()
        self.model_zero_grad(names)
        with self.autocast():
            terms = self.forward_train(batch)
        if not isinstance(terms, dict):
            raise TypeError(f"{type(self).__name__}.forward_train must return a dict, got {type(terms).__name__}")
        loss_keys = [k for k in terms if k.startswith("loss")]
        if not loss_keys:
            raise ValueError(f"forward_train returned no entry whose key starts with 'loss' (keys: {list(terms)})")
        total = sum(terms[k].float() for k in loss_keys)
        if any_across_ranks(not bool(torch.isfinite(total).all()), self.device):
            return self._handle_nonfinite(terms)
        if self.grad_scaler is not None:
            self.grad_scaler.scale(total).backward()
        else:
            total.backward()
        all_reduce_gradients(self._registered_params(names))
        if self.grad_scaler is not None:
            for name in names:
                if self._optims[name] is not None:
                    self.grad_scaler.step(self._optims[name])
            self.grad_scaler.update()
        else:
            self.model_update(names)
        self._consecutive_skips = 0
        summary = {k: (v.item() if torch.is_tensor(v) else v) for k, v in terms.items()}
        if len(loss_keys) > 1 and "loss" not in summary:
            summary["loss"] = total.item()
        return summary

    def _handle_nonfinite(self, terms: dict) -> dict:
        shown = ", ".join(
            f"{k}={v.item() if torch.is_tensor(v) and v.numel() == 1 else v}" for k, v in terms.items()
        )
        where = f"epoch {self.epoch + 1}/{self.max_epoch}, step {self.batch_idx + 1}/{self.num_batches}"
        self.model_zero_grad()
        if self.cfg.TRAIN.get("SKIP_NONFINITE", False):
            self.nonfinite_skipped += 1
            self._epoch_skips += 1
            self._consecutive_skips += 1
            limit = self.cfg.TRAIN.get("MAX_CONSECUTIVE_SKIPS", 0)
            if 0 < limit < self._consecutive_skips:
                raise NonFiniteError(
                    f"Gave up: {self._consecutive_skips} steps in a row had a non-finite loss, more than "
                    f"TRAIN.MAX_CONSECUTIVE_SKIPS ({limit}); the last at {where}: {shown}. "
                    f"Training stopped; {self._checkpoint_note()}."
                )
            logger.warning(f"Skipping a step with a non-finite loss at {where}: {shown}")
            return {}
        raise NonFiniteError(
            f"Non-finite loss at {where}: {shown}. Training stopped; {self._checkpoint_note()}. "
            "Set TRAIN.SKIP_NONFINITE True to skip such steps instead."
        )

    def _check_epoch_not_all_skipped(self, steps_run: int) -> None:
        """An epoch whose every step was skipped learned nothing: stop before it is saved or tested."""
        if steps_run and self._epoch_skips == steps_run:
            raise NonFiniteError(
                f"Every step of epoch {self.epoch + 1}/{self.max_epoch} ({steps_run}) had a non-finite loss and "
                f"was skipped (TRAIN.SKIP_NONFINITE); training stopped; {self._checkpoint_note()}."
            )


class TrainerX(SimpleTrainer):
    """A trainer on labelled data only (``train_loader_x``)."""

    def run_epoch(self):
        self.set_model_mode("train")
        terms = StepTerms()
        batch_time = AverageMeter()
        data_time = AverageMeter()
        self.num_batches = len(self.train_loader_x)
        self._engine_stepped = False
        self._epoch_skips = 0
        steps_run = 0
        reset_bad_image_count()
        for sampler in self._samplers():
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(self.epoch)

        skip, resume_rng = self._start_epoch_rng()

        progress = tqdm(
            total=self.num_batches,
            initial=skip,
            desc=f"epoch {self.epoch + 1}/{self.max_epoch}",
            disable=progress_disabled(),
            leave=False,
        )
        end = time.time()
        for self.batch_idx, batch in enumerate(self.train_loader_x):  # noqa: B020  (Dassl exposes self.batch_idx)
            if self.batch_idx < skip:  # already trained on before the interruption
                if self.batch_idx == skip - 1:
                    self._restore_rng(resume_rng)
                end = time.time()
                continue
            data_time.update(time.time() - end)
            loss_summary = self.forward_backward(batch)
            steps_run += 1
            batch_time.update(time.time() - end)
            terms.update(loss_summary, _batch_images(batch))
            progress.update(1)
            self._log_step(terms, batch_time, data_time)
            end = time.time()
            if self.batch_idx + 1 < self.num_batches and self._stop_requested():
                progress.close()
                with self._explain_disk_full():
                    self.save_run_state(epochs_done=self.epoch, steps_done=self.batch_idx + 1)
                self._raise_interrupted(
                    f"at epoch {self.epoch + 1}/{self.max_epoch}, step {self.batch_idx + 1}/{self.num_batches}"
                )
        progress.close()
        self._check_epoch_not_all_skipped(steps_run)
        if self._engine_stepped:
            self.update_lr()  # named-loss trainers leave LR stepping to the engine, once per epoch
        self._log_skipped_images()

    def _log_step(self, terms: StepTerms, batch_time: AverageMeter, data_time: AverageMeter) -> None:
        """At the logging steps (every TRAIN.PRINT_FREQ), the step's terms over the global batch: log and TensorBoard.

        Reducing only here spares a collective per step; every rank reaches the same logging steps.
        """
        print_freq = self.cfg.TRAIN.PRINT_FREQ
        if not ((self.batch_idx + 1) % print_freq == 0 or self.num_batches < print_freq):
            return
        values = terms.global_values()
        nb_remain = self.num_batches - self.batch_idx - 1
        nb_remain += (self.max_epoch - self.epoch - 1) * self.num_batches
        eta = str(datetime.timedelta(seconds=int(batch_time.avg * nb_remain)))
        info = [
            f"epoch [{self.epoch + 1}/{self.max_epoch}]",
            f"batch [{self.batch_idx + 1}/{self.num_batches}]",
            f"time {batch_time.val:.3f} ({batch_time.avg:.3f})",
            f"data {data_time.val:.3f} ({data_time.avg:.3f})",
            *(f"{name} {value:.4f} ({avg:.4f})" for name, (value, avg) in values.items()),
            f"lr {self.get_current_lr():.4e}",
            f"eta {eta}",
        ]
        logger.info(" ".join(info))
        n_iter = self.epoch * self.num_batches + self.batch_idx
        for name, (_, avg) in values.items():
            self.write_scalar("train/" + name, avg, n_iter)
        self.write_scalar("train/lr", self.get_current_lr(), n_iter)

    def _log_skipped_images(self) -> None:
        """Report the images the data pipeline skipped this epoch (DATALOADER.SKIP_BAD_IMAGES)."""
        count = bad_image_count()
        if count:
            logger.warning(f"WARNING: skipped {count} unreadable image(s) in epoch {self.epoch + 1} (DATALOADER.SKIP_BAD_IMAGES)")
        reset_bad_image_count()

    def parse_batch_train(self, batch):
        input = batch["img"].to(self.device)
        label = batch["label"].to(self.device)
        domain = batch["domain"].to(self.device)
        return input, label, domain
