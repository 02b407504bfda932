"""Evaluating a saved model: whether a run folder holds this model, which checkpoint to load, and the one loader
of saved weights."""
from __future__ import annotations

import logging
import os.path as osp

from yacs.config import CfgNode

from dassl.utils import (
    CheckpointError,
    ConfigError,
    CorruptCheckpointError,
    UserError,
    intact_checkpoints,
    load_checkpoint,
    load_state_dict_checked,
    read_checkpoint_pointer,
)

from .build import trainer_config_node
from .run_state import (
    CONFIG_RECORD,
    POINTER_FILE,
    RUN_RECORD,
    config_differences,
    config_fingerprint,
    data_content_differences,
    default_flat_config,
    model_shaping_keys,
    precision_difference,
    read_run_record,
    shown_differences,
    weights_differences,
)

__all__ = [
    "FINAL_MODEL_CHOICES",
    "ALLOW_MISMATCH_FLAG",
    "ModelMismatchError",
    "check_final_model",
    "check_saved_model",
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
ALLOW_MISMATCH_FLAG = "--allow-model-mismatch"  # train.py's switch that evaluates a model folder that differs


class ModelMismatchError(UserError, RuntimeError):
    """``--model-dir`` holds a model trained as another model (trainer, backbone, a key that shapes it)."""


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


def _intact_note(folder: str, damaged: str) -> str:
    """The checkpoints beside a damaged one that could be evaluated instead, or "retrain"."""
    intact = intact_checkpoints(folder, exclude=[damaged])
    if not intact:
        return f'No intact checkpoint remains in "{folder}": retrain.'
    shown = [
        f"{n} (--load-epoch {n[len(EPOCH_MODEL_PREFIX):]})" if n.startswith(EPOCH_MODEL_PREFIX) else n for n in intact
    ]
    return f'Intact in "{folder}": {", ".join(shown)}; evaluate one of them, or retrain.'


def load_saved_weights(trainer, directory: str, epoch: int | None = None) -> None:
    """Load every registered model of ``trainer`` from ``directory/<name>/`` (model-best, or the file of ``epoch``).

    Every file is verified first (a damaged one is refused, naming what is intact beside it). Strict about
    learned keys, missing or unexpected (``trainer.allow_model_mismatch`` leaves unexpected ones out with a
    warning); buffers named in ``trainer.CLASS_SET_KEYS`` are rebuilt for the current class set, never
    loaded, so a model trained on base classes evaluates on new ones.
    """
    if not directory:
        logger.info("Note that load_model() is skipped as no pretrained model is given")
        return
    model_file = BEST_MODEL if epoch is None else f"{EPOCH_MODEL_PREFIX}{epoch}"
    allow_unexpected = bool(getattr(trainer, "allow_model_mismatch", False))
    for name in trainer.get_model_names():
        model_path = osp.join(directory, name, model_file)
        if not osp.exists(model_path):
            raise FileNotFoundError(f'Model not found at "{model_path}"')
        try:
            checkpoint = load_checkpoint(model_path)
        except CorruptCheckpointError as err:
            err.add_note(_intact_note(osp.join(directory, name), model_file))
            raise
        val_result = checkpoint.get("val_result")
        shown = f", val_result={val_result:.1f}" if val_result is not None else ""
        logger.info(f'Load "{model_path}" to {name} (epoch={checkpoint["epoch"]}{shown})')
        load_state_dict_checked(
            trainer._models[name], checkpoint["state_dict"], model_path, trainer.CLASS_SET_KEYS, allow_unexpected
        )


def latest_saved_epoch(trainer, directory: str) -> int | None:
    """The epoch of the file named in ``directory/<name>/checkpoint`` (None for model-best).

    Raises FileNotFoundError naming the expected path when the folder holds no checkpoint, and
    CheckpointError when the pointer file names no model file.
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
    fname = read_checkpoint_pointer(osp.dirname(pointer))
    if fname == BEST_MODEL:
        return None
    epoch = fname[len(EPOCH_MODEL_PREFIX) :]
    if not (fname.startswith(EPOCH_MODEL_PREFIX) and epoch.isdigit()):
        raise CheckpointError(
            f'Checkpoint pointer "{pointer}" names {fname!r}, neither {EPOCH_MODEL_PREFIX}N nor {BEST_MODEL}; '
            "write the name of the latest model file into it, or pass --load-epoch N"
        )
    return int(epoch)


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


def check_saved_model(trainer, model_dir: str, allow_mismatch: bool = False) -> None:
    """Refuse ``model_dir`` when its model was trained as another model than ``trainer`` builds.

    Compared with its config.yaml: the keys that decide what the weights mean (``model_shaping_keys``:
    the trainer, its own keys but PREC, MODEL.*); with its run.json: the content of each weight file (the
    backbone), and, on the same dataset, the split file's entries (another split may put training images
    in the test set). The data and optimisation keys may differ (base -> new, another dataset). A differing
    precision is said once. ``allow_mismatch`` (train.py's --allow-model-mismatch) turns the refusal into a
    warning in the log.
    """
    cfg = trainer.cfg
    saved = trained_config(model_dir)
    if saved is None:
        logger.warning(
            f'WARNING: "{model_dir}" has no {CONFIG_RECORD} (not written by this engine?), so nothing checks that '
            f"it was trained as this {cfg.TRAINER.NAME} model, with this backbone"
        )
        return
    node = trainer_config_node(cfg.TRAINER.NAME, type(trainer))
    problems = config_differences(
        model_shaping_keys(config_fingerprint(saved)[1], node),
        model_shaping_keys(config_fingerprint(cfg)[1], node),
        model_shaping_keys(default_flat_config(), node),
    )
    record = read_run_record(model_dir)
    if record is None:
        logger.info(f'Note: "{model_dir}" has no {RUN_RECORD}, so the content of its backbone file is not checked')
    else:
        current = trainer.current_run_record()
        problems += weights_differences(record.get("weights"), current["weights"])
        if saved.get("DATASET", {}).get("NAME") == cfg.DATASET.NAME:
            problems += data_content_differences(record.get("data"), current["data"], parts=("split",))
        precision = precision_difference(record.get("precision"), current["precision"])
        if precision:
            logger.warning(f'WARNING: evaluating "{model_dir}" in another precision than it was trained in ({precision})')
    if not problems:
        return
    if allow_mismatch:
        logger.warning(
            f'WARNING: evaluating "{model_dir}" although it was trained as another model '
            f"({shown_differences(problems)}) ({ALLOW_MISMATCH_FLAG})"
        )
        return
    raise ModelMismatchError(
        f'Refusing to evaluate "{model_dir}": it was trained as another model than this run builds '
        f"({shown_differences(problems)}). Evaluate it with the config it was trained with (its {CONFIG_RECORD}), "
        f"or pass {ALLOW_MISMATCH_FLAG} to evaluate it anyway."
    )


def evaluate_saved_model(trainer, model_dir: str, load_epoch: int | None, allow_mismatch: bool = False) -> float:
    """Check that ``model_dir`` holds this trainer's model, load the requested checkpoint and test it; never trains.

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
    if model_dir:
        check_saved_model(trainer, model_dir, allow_mismatch)
        trainer.allow_model_mismatch = allow_mismatch
    trainer.load_model(model_dir, epoch=load_epoch)
    return trainer.test()
