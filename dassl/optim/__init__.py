"""``dassl.optim``: optimizers and LR schedulers from the ``OPTIM`` config node."""
from .lr_scheduler import (
    AVAILABLE_LR_SCHEDULERS,
    AVAILABLE_WARMUP_TYPES,
    ConstantWarmupScheduler,
    LinearWarmupScheduler,
    build_lr_scheduler,
)
from .optimizer import AVAILABLE_OPTIMIZERS, build_optimizer

__all__ = [
    "AVAILABLE_OPTIMIZERS",
    "AVAILABLE_LR_SCHEDULERS",
    "AVAILABLE_WARMUP_TYPES",
    "ConstantWarmupScheduler",
    "LinearWarmupScheduler",
    "build_optimizer",
    "build_lr_scheduler",
]
