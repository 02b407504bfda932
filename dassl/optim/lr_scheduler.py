"""``build_lr_scheduler``: torch schedulers plus Dassl's constant / linear warm-up wrappers.

The warm-up wrappers hold a *successor* scheduler that takes over after ``warmup_epoch`` steps.
Their ``state_dict`` stores the successor's state (not the object): upstream pickled the object,
so a resumed run stepped a copy bound to a stale optimizer and the real LR froze.
"""
from __future__ import annotations

import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, MultiStepLR, StepLR

from dassl.utils.errors import ConfigError

try:
    from torch.optim.lr_scheduler import LRScheduler
except ImportError:  # torch < 2.0
    from torch.optim.lr_scheduler import _LRScheduler as LRScheduler

__all__ = [
    "AVAILABLE_LR_SCHEDULERS",
    "AVAILABLE_WARMUP_TYPES",
    "ConstantWarmupScheduler",
    "LinearWarmupScheduler",
    "build_lr_scheduler",
]

AVAILABLE_LR_SCHEDULERS = ["single_step", "multi_step", "cosine"]
AVAILABLE_WARMUP_TYPES = ["constant", "linear"]


class _BaseWarmupScheduler(LRScheduler):
    """Steps itself for ``warmup_epoch`` steps, then forwards every step to ``successor``."""

    def __init__(self, optimizer: torch.optim.Optimizer, successor: LRScheduler, warmup_epoch: int, last_epoch: int = -1):
        self.successor = successor
        self.warmup_epoch = warmup_epoch
        super().__init__(optimizer, last_epoch)

    def step(self, epoch=None) -> None:
        if self.last_epoch >= self.warmup_epoch:
            self.successor.step()
            self._last_lr = self.successor.get_last_lr()
        else:
            super().step()

    def state_dict(self) -> dict:
        state = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "successor")}
        state["successor_state"] = self.successor.state_dict()
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        """Load our own format, or an upstream one whose ``successor`` entry is a pickled scheduler."""
        state = dict(state_dict)
        successor_state = state.pop("successor_state", None)
        pickled_successor = state.pop("successor", None)
        if successor_state is None and pickled_successor is not None:
            successor_state = pickled_successor.state_dict()
        if successor_state is not None:
            self.successor.load_state_dict(successor_state)
        self.__dict__.update(state)


class ConstantWarmupScheduler(_BaseWarmupScheduler):
    """LR is ``cons_lr`` during warm-up."""

    def __init__(self, optimizer, successor, warmup_epoch: int, cons_lr: float, last_epoch: int = -1):
        self.cons_lr = cons_lr
        super().__init__(optimizer, successor, warmup_epoch, last_epoch)

    def get_lr(self) -> list[float]:
        if self.last_epoch >= self.warmup_epoch:
            return self.successor.get_last_lr()
        return [self.cons_lr for _ in self.base_lrs]


class LinearWarmupScheduler(_BaseWarmupScheduler):
    """LR is ``min_lr`` at step 0, then ``base_lr * step / warmup_epoch`` until warm-up ends."""

    def __init__(self, optimizer, successor, warmup_epoch: int, min_lr: float, last_epoch: int = -1):
        self.min_lr = min_lr
        super().__init__(optimizer, successor, warmup_epoch, last_epoch)

    def get_lr(self) -> list[float]:
        if self.last_epoch >= self.warmup_epoch:
            return self.successor.get_last_lr()
        if self.last_epoch == 0:
            return [self.min_lr for _ in self.base_lrs]
        return [lr * self.last_epoch / self.warmup_epoch for lr in self.base_lrs]


def _single_step_size(stepsize, max_epoch: int) -> int:
    if isinstance(stepsize, (list, tuple)):
        stepsize = stepsize[-1]
    if not isinstance(stepsize, int):
        raise ConfigError(f"OPTIM.STEPSIZE is {stepsize!r}; valid for single_step: an int (or a list ending in one)")
    return max_epoch if stepsize <= 0 else stepsize


def build_lr_scheduler(optimizer: torch.optim.Optimizer, optim_cfg) -> LRScheduler:
    """Build ``OPTIM.LR_SCHEDULER`` (stepped once per epoch), wrapped in a warm-up if ``WARMUP_EPOCH > 0``."""
    name = optim_cfg.LR_SCHEDULER
    max_epoch = optim_cfg.MAX_EPOCH
    if name not in AVAILABLE_LR_SCHEDULERS:
        raise ConfigError(f'Unknown OPTIM.LR_SCHEDULER "{name}"; valid choices: {AVAILABLE_LR_SCHEDULERS}')
    warmup = optim_cfg.WARMUP_EPOCH > 0
    if warmup and optim_cfg.WARMUP_TYPE not in AVAILABLE_WARMUP_TYPES:
        raise ConfigError(f'Unknown OPTIM.WARMUP_TYPE "{optim_cfg.WARMUP_TYPE}"; valid choices: {AVAILABLE_WARMUP_TYPES}')

    if name == "single_step":
        scheduler = StepLR(optimizer, step_size=_single_step_size(optim_cfg.STEPSIZE, max_epoch), gamma=optim_cfg.GAMMA)
    elif name == "multi_step":
        if not isinstance(optim_cfg.STEPSIZE, (list, tuple)):
            raise ConfigError(f"OPTIM.STEPSIZE is {optim_cfg.STEPSIZE!r}; valid for multi_step: a list of epochs")
        scheduler = MultiStepLR(optimizer, milestones=list(optim_cfg.STEPSIZE), gamma=optim_cfg.GAMMA)
    else:
        scheduler = CosineAnnealingLR(optimizer, T_max=float(max_epoch))

    if not warmup:
        return scheduler
    if not optim_cfg.WARMUP_RECOUNT:
        scheduler.last_epoch = optim_cfg.WARMUP_EPOCH
    if optim_cfg.WARMUP_TYPE == "constant":
        return ConstantWarmupScheduler(optimizer, scheduler, optim_cfg.WARMUP_EPOCH, optim_cfg.WARMUP_CONS_LR)
    return LinearWarmupScheduler(optimizer, scheduler, optim_cfg.WARMUP_EPOCH, optim_cfg.WARMUP_MIN_LR)
