"""Evaluating a saved model: which checkpoint of a run folder to load, and the one loader of saved weights."""
from __future__ import annotations

import logging
import os.path as osp

from yacs.config import CfgNode

from dassl.utils import ConfigError, load_checkpoint, load_state_dict_checked

from .run_state import CONFIG_RECORD, POINTER_FILE

__all__ = [
    "FINAL_MODEL_CHOICES",
    "check_final_model",
    "load_saved_weights",
    "latest_saved_epoch",
    "trained_config",
    "trained_final_model",
    "warn_if_unfinished",
    "evaluate_saved_model",
]

logger = logging.getLogger(__name__)

FINAL_MODEL_CHOICES = ("last_step", "best_val")  # TEST.FINAL_MODEL: the model a training run deploys
BEST_MODEL = "model-best.pth.tar"
EPOCH_MODEL_PREFIX = "model.pth.tar-"


def check_final_model(cfg, has_val: bool) -> None:
    """Refuse a TEST.FINAL_MODEL that is unknown, or ``best_val`` on a dataset without a validation split."""
    final_model = cfg.TEST.FINAL_MODEL
    if final_model not in FINAL_MODEL_CHOICES:
        raise ConfigError(f'TEST.FINAL_MODEL is "{final_model}"; choose one of {list(FINAL_MODEL_CHOICES)}')
    if final_model == "best_val" and not cfg.TEST.NO_TEST and not has_val:
        raise ConfigError(
            f'TEST.FINAL_MODEL "best_val" selects the model on the validation split, but dataset '
            f'"{cfg.DATASET.NAME}" has none; use TEST.FINAL_MODEL "last_step" '
            "(the test split is never used for model selection)"
        )


def load_saved_weights(trainer, directory: str, epoch: int | None = None) -> None:
    """Load every registered model of ``trainer`` from ``directory/<name>/`` (model-best, or the file of ``epoch``).

    Strict about learned keys; buffers named in ``trainer.CLASS_SET_KEYS`` are rebuilt for the current
    class set, never loaded, so a model trained on base classes evaluates on new ones.
    """
    if not directory:
        logger.info("Note that load_model() is skipped as no pretrained model is given")
        return
    model_file = BEST_MODEL if epoch is None else f"{EPOCH_MODEL_PREFIX}{epoch}"
    for name in trainer.get_model_names():
        model_path = osp.join(directory, name, model_file)
        if not osp.exists(model_path):
            raise FileNotFoundError(f'Model not found at "{model_path}"')
        checkpoint = load_checkpoint(model_path)
        val_result = checkpoint.get("val_result")
        shown = f", val_result={val_result:.1f}" if val_result is not None else ""
        logger.info(f'Load "{model_path}" to {name} (epoch={checkpoint["epoch"]}{shown})')
        load_state_dict_checked(trainer._models[name], checkpoint["state_dict"], model_path, trainer.CLASS_SET_KEYS)


def latest_saved_epoch(trainer, directory: str) -> int | None:
    """The epoch of the file named in ``directory/<name>/checkpoint`` (None for model-best).

    Raises FileNotFoundError naming the expected path when the folder holds no checkpoint.
    """
    names = trainer.get_model_names()
    if not names:
        return None
    pointer = osp.join(directory, names[0], POINTER_FILE)
    if not osp.isfile(pointer):
        raise FileNotFoundError(
            f'No checkpoint in "{directory}": expected "{pointer}" (written by training). '
            "Check --model-dir, or pass --load-epoch."
        )
    with open(pointer) as f:
        fname = f.readline().strip()
    return int(fname[len(EPOCH_MODEL_PREFIX) :]) if fname.startswith(EPOCH_MODEL_PREFIX) else None


def trained_config(model_dir: str):
    """The config.yaml of the run that wrote ``model_dir`` (None when it has none)."""
    path = osp.join(model_dir, CONFIG_RECORD)
    if not osp.isfile(path):
        return None
    with open(path) as f:
        return CfgNode.load_cfg(f)


def trained_final_model(model_dir: str, default: str) -> str:
    """TEST.FINAL_MODEL of the run that wrote ``model_dir`` (its config.yaml), else ``default``."""
    cfg = trained_config(model_dir)
    return default if cfg is None else cfg.get("TEST", {}).get("FINAL_MODEL", default)


def warn_if_unfinished(trainer, model_dir: str, loaded: str) -> None:
    """Say loudly when ``model_dir``'s training never reached its last epoch: its accuracy is not the run's."""
    cfg = trained_config(model_dir)
    names = trainer.get_model_names()
    if cfg is None or not names:
        return
    max_epoch = cfg.get("OPTIM", {}).get("MAX_EPOCH")
    if max_epoch is None or osp.isfile(osp.join(model_dir, names[0], f"{EPOCH_MODEL_PREFIX}{max_epoch}")):
        return
    logger.warning(
        f'WARNING: "{model_dir}" holds an unfinished run (no model.pth.tar-{max_epoch}; its OPTIM.MAX_EPOCH is '
        f"{max_epoch}): evaluating {loaded}, so this accuracy is not that of the trained model. Finish the "
        "training first (run its command again: it resumes)."
    )


def evaluate_saved_model(trainer, model_dir: str, load_epoch: int | None) -> float:
    """Load the requested checkpoint from ``model_dir`` and test it; never trains.

    Without ``load_epoch`` it loads the model the training run deployed: model-best for a best_val run,
    else the latest checkpoint, so base and new accuracies always come from the same model.
    """
    if load_epoch is not None and not model_dir:
        raise ConfigError("--load-epoch needs --model-dir (the training run's output folder)")
    if not model_dir and trainer.has_learned_modules():
        logger.warning(
            f"WARNING: --eval-only without --model-dir: {type(trainer).__name__} learns its prompt, and this "
            "evaluates the untrained one (its initialisation). Pass --model-dir <training output folder>."
        )
    if model_dir and load_epoch is None:
        latest = trainer.latest_saved_epoch(model_dir)  # also checks that the folder holds a checkpoint
        best_val = trained_final_model(model_dir, trainer.cfg.TEST.FINAL_MODEL) == "best_val"
        load_epoch = None if best_val else latest
        loaded = BEST_MODEL if load_epoch is None else f"{EPOCH_MODEL_PREFIX}{load_epoch}"
        warn_if_unfinished(trainer, model_dir, loaded)
    trainer.load_model(model_dir, epoch=load_epoch)
    return trainer.test()
