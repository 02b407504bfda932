"""Dassl's default config schema and the hook that lets packages extend it."""
from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence

from yacs.config import CfgNode as CN

from .checked import ConfigNode

__all__ = [
    "get_cfg_default",
    "register_cfg_extension",
    "run_local_keys",
    "extension_checks",
    "clean_cfg",
    "default_num_workers",
]

MAX_DEFAULT_WORKERS = 8  # the CoOp family's setting, enough to feed one GPU
MIN_CORES_FOR_WORKERS = 4  # below this, DataLoader workers only compete with the step's threads


def default_num_workers() -> int:
    """Half the CPUs this process may use, at most 8; none below 4 CPUs, where loading runs in the main process."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    # On 2 cores the step's two threads fill the machine: a worker process preempts one of them and the
    # other waits at each parallel region, so steps slow by more than the loading costs in-process
    # (README, Performance: epoch ratio 1.15-1.42 with one worker, 1.00-1.09 with none).
    if cores < MIN_CORES_FOR_WORKERS:
        return 0
    return min(MAX_DEFAULT_WORKERS, cores // 2)


_C = ConfigNode()

_C.VERSION = 1
_C.OUTPUT_DIR = "./output"
_C.RESUME = ""
_C.SEED = -1  # negative: no seeding
_C.USE_CUDA = True
_C.VERBOSE = True

###########################
# Input
###########################
_C.INPUT = CN()
_C.INPUT.SIZE = (224, 224)
_C.INPUT.INTERPOLATION = "bilinear"  # bilinear | bicubic | nearest
_C.INPUT.TRANSFORMS = ()
_C.INPUT.NO_TRANSFORM = False
_C.INPUT.PIXEL_MEAN = [0.485, 0.456, 0.406]
_C.INPUT.PIXEL_STD = [0.229, 0.224, 0.225]
_C.INPUT.CROP_PADDING = 4
_C.INPUT.RRCROP_SCALE = (0.08, 1.0)
_C.INPUT.CUTOUT_N = 1
_C.INPUT.CUTOUT_LEN = 16
_C.INPUT.GN_MEAN = 0.0
_C.INPUT.GN_STD = 0.15
_C.INPUT.RANDAUGMENT_N = 2
_C.INPUT.RANDAUGMENT_M = 10
_C.INPUT.COLORJITTER_B = 0.4
_C.INPUT.COLORJITTER_C = 0.4
_C.INPUT.COLORJITTER_S = 0.4
_C.INPUT.COLORJITTER_H = 0.1
_C.INPUT.RGS_P = 0.2  # random grayscale probability
_C.INPUT.GB_P = 0.5  # gaussian blur probability
_C.INPUT.GB_K = 21  # gaussian blur kernel size

###########################
# Dataset
###########################
_C.DATASET = CN()
_C.DATASET.ROOT = ""
_C.DATASET.NAME = ""
_C.DATASET.SOURCE_DOMAINS = ()
_C.DATASET.TARGET_DOMAINS = ()
_C.DATASET.NUM_LABELED = -1
_C.DATASET.NUM_SHOTS = -1
_C.DATASET.VAL_PERCENT = 0.1
_C.DATASET.STL10_FOLD = -1
_C.DATASET.CIFAR_C_TYPE = ""
_C.DATASET.CIFAR_C_LEVEL = 1
_C.DATASET.ALL_AS_UNLABELED = False

###########################
# Dataloader
###########################
_C.DATALOADER = CN()
_C.DATALOADER.NUM_WORKERS = default_num_workers()  # from this machine's cores
_C.DATALOADER.K_TRANSFORMS = 1  # >1: each train image is transformed K times
_C.DATALOADER.RETURN_IMG0 = False  # also return the resized, un-augmented image
# Off: an unreadable image stops the run naming the file. On: warn once per file, use another sample.
_C.DATALOADER.SKIP_BAD_IMAGES = False
_C.DATALOADER.TRAIN_X = CN()
_C.DATALOADER.TRAIN_X.SAMPLER = "RandomSampler"
_C.DATALOADER.TRAIN_X.BATCH_SIZE = 32  # the global batch: split across ranks under DDP
_C.DATALOADER.TRAIN_X.N_DOMAIN = 0
_C.DATALOADER.TRAIN_X.N_INS = 16
_C.DATALOADER.TRAIN_U = CN()
_C.DATALOADER.TRAIN_U.SAME_AS_X = True
_C.DATALOADER.TRAIN_U.SAMPLER = "RandomSampler"
_C.DATALOADER.TRAIN_U.BATCH_SIZE = 32
_C.DATALOADER.TRAIN_U.N_DOMAIN = 0
_C.DATALOADER.TRAIN_U.N_INS = 16
_C.DATALOADER.TEST = CN()
_C.DATALOADER.TEST.SAMPLER = "SequentialSampler"
_C.DATALOADER.TEST.BATCH_SIZE = 32

###########################
# Model
###########################
_C.MODEL = CN()
_C.MODEL.INIT_WEIGHTS = ""
_C.MODEL.BACKBONE = CN()
_C.MODEL.BACKBONE.NAME = ""  # the CoOp family puts the CLIP name or a checkpoint path here
_C.MODEL.BACKBONE.PRETRAINED = True
_C.MODEL.HEAD = CN()
_C.MODEL.HEAD.NAME = ""
_C.MODEL.HEAD.HIDDEN_LAYERS = ()
_C.MODEL.HEAD.ACTIVATION = "relu"
_C.MODEL.HEAD.BN = True
_C.MODEL.HEAD.DROPOUT = 0.0

###########################
# Optimization
###########################
_C.OPTIM = CN()
_C.OPTIM.NAME = "adam"
_C.OPTIM.LR = 0.0003
_C.OPTIM.WEIGHT_DECAY = 5e-4
_C.OPTIM.MOMENTUM = 0.9
_C.OPTIM.SGD_DAMPNING = 0  # spelling kept from upstream
_C.OPTIM.SGD_NESTEROV = False
_C.OPTIM.RMSPROP_ALPHA = 0.99
_C.OPTIM.ADAM_BETA1 = 0.9
_C.OPTIM.ADAM_BETA2 = 0.999
_C.OPTIM.STAGED_LR = False  # NEW_LAYERS get LR, other children LR * BASE_LR_MULT
_C.OPTIM.NEW_LAYERS = ()
_C.OPTIM.BASE_LR_MULT = 0.1
_C.OPTIM.LR_SCHEDULER = "single_step"
_C.OPTIM.STEPSIZE = (-1,)  # -1: decay once at MAX_EPOCH, i.e. a constant LR
_C.OPTIM.GAMMA = 0.1
_C.OPTIM.MAX_EPOCH = 10
_C.OPTIM.WARMUP_EPOCH = -1  # <= 0: no warm-up
_C.OPTIM.WARMUP_TYPE = "linear"  # constant | linear
_C.OPTIM.WARMUP_CONS_LR = 1e-5
_C.OPTIM.WARMUP_MIN_LR = 1e-5
_C.OPTIM.WARMUP_RECOUNT = True  # False: the successor starts at epoch WARMUP_EPOCH

###########################
# Train
###########################
_C.TRAIN = CN()
_C.TRAIN.CHECKPOINT_FREQ = 0
_C.TRAIN.PRINT_FREQ = 10
_C.TRAIN.COUNT_ITER = "train_x"  # train_x | train_u | smaller_one
# Off: a non-finite loss stops the run. On: the step is skipped and counted.
_C.TRAIN.SKIP_NONFINITE = False
# With SKIP_NONFINITE: stop when more steps than this in a row are skipped (0: no limit). An epoch
# whose every step was skipped always stops the run.
_C.TRAIN.MAX_CONSECUTIVE_SKIPS = 5
# Resume a folder that holds checkpoints but no config.yaml (upstream Dassl writes none) unchecked.
_C.TRAIN.RESUME_UNCHECKED = False

###########################
# Test
###########################
_C.TEST = CN()
_C.TEST.EVALUATOR = "Classification"
_C.TEST.PER_CLASS_RESULT = False
_C.TEST.COMPUTE_CMAT = False
_C.TEST.NO_TEST = False
_C.TEST.SPLIT = "test"  # test | val
_C.TEST.FINAL_MODEL = "last_step"  # last_step | best_val
# Evaluate the untrained model on TEST.SPLIT before the first step of a fresh run (never on resume).
_C.TEST.AT_START = False

###########################
# Trainer
###########################
_C.TRAINER = CN()
_C.TRAINER.NAME = ""

_EXTENSIONS: list[Callable[[CN], None]] = []
# Per extension (module, qualname): config keys it declares run-local (see ``run_local_keys``).
_RUN_LOCAL: dict[tuple[str, str], tuple[str, ...]] = {}
# Per extension (module, qualname): the check of the values of the keys it adds (see ``extension_checks``).
_CHECKS: dict[tuple[str, str], Callable[[CN], None]] = {}


def register_cfg_extension(
    fn: Callable[[CN], None] | None = None,
    *,
    run_local_keys: Sequence[str] = (),
    check: Callable[[CN], None] | None = None,
):
    """Decorator: ``fn(cfg)`` adds a package's defaults; every ``get_cfg_default()`` applies it.

    ``run_local_keys`` names the keys it adds that never change what is learned (memory/speed trade-offs,
    evaluation chunking), so changing them does not block a resume. ``check(cfg)`` validates the values of
    keys every run reads whatever its trainer (a method's own keys are checked by its trainer's ``check_cfg``);
    ``dassl.config.validate.check_engine_config`` runs it with the engine's checks. Use bare
    (``@register_cfg_extension``) or with keywords (``@register_cfg_extension(run_local_keys=("TRAINER.X.EVAL_CHUNK",))``).
    Re-registering a function with the same module and name (e.g. a re-imported module) replaces it.
    """
    if fn is None:
        return functools.partial(register_cfg_extension, run_local_keys=run_local_keys, check=check)
    key = (fn.__module__, fn.__qualname__)
    _EXTENSIONS[:] = [f for f in _EXTENSIONS if (f.__module__, f.__qualname__) != key]
    _EXTENSIONS.append(fn)
    _RUN_LOCAL[key] = tuple(run_local_keys)
    _CHECKS.pop(key, None)
    if check is not None:
        _CHECKS[key] = check
    return fn


def run_local_keys() -> tuple[str, ...]:
    """Every key (or key prefix) the registered extensions declared run-local, in registration order."""
    return tuple(k for keys in _RUN_LOCAL.values() for k in keys)


def extension_checks() -> tuple[Callable[[CN], None], ...]:
    """The value checks the registered extensions gave with their keys, in registration order."""
    return tuple(_CHECKS.values())


def get_cfg_default() -> CN:
    """A fresh, mutable copy of the defaults with every registered extension applied."""
    cfg = _C.clone()
    for extend in _EXTENSIONS:
        extend(cfg)
    return cfg


def clean_cfg(cfg: CN, trainer: str) -> None:
    """Delete every ``cfg.TRAINER.<X>`` except ``NAME`` and ``trainer.upper()``."""
    for key in list(cfg.TRAINER.keys()):
        if key in ("NAME", trainer.upper()):
            continue
        cfg.TRAINER.pop(key, None)
