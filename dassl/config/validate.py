"""The valid range of each numeric engine key, checked once before a trainer builds anything.

A value outside its range either crashes deep inside torch (a DataLoader, a modulo) or, worse, runs and
reports a number that means nothing (no epoch, no step, a learning rate that climbs the loss). Each is
refused with one line naming the key, its value and what would be valid.
"""
from __future__ import annotations

from dataclasses import dataclass

from yacs.config import CfgNode as CN

from dassl.utils.errors import ConfigError

from .defaults import extension_checks

__all__ = ["Bound", "ENGINE_RANGES", "check_engine_config"]


@dataclass(frozen=True)
class Bound:
    """A lower bound, inclusive (``>= minimum``) or not (``> minimum``); ``why`` says what it protects."""

    minimum: float
    inclusive: bool = True
    why: str = ""

    def holds(self, value: float) -> bool:
        return value >= self.minimum if self.inclusive else value > self.minimum

    def __str__(self) -> str:
        return f"{'>=' if self.inclusive else '>'} {self.minimum:g}"


# Every numeric key of dassl's defaults whose range is narrower than its type, with that range.
ENGINE_RANGES: dict[str, Bound] = {
    "DATALOADER.NUM_WORKERS": Bound(0, why="0 loads in the main process"),
    "DATALOADER.K_TRANSFORMS": Bound(1, why="transformed copies of each training image"),
    "DATALOADER.TRAIN_X.BATCH_SIZE": Bound(1, why="images per training step, all processes together"),
    "DATALOADER.TRAIN_U.BATCH_SIZE": Bound(1, why="unlabelled images per training step"),
    "DATALOADER.TEST.BATCH_SIZE": Bound(1, why="images per evaluation batch"),
    "OPTIM.LR": Bound(0, inclusive=False, why="0 learns nothing, a negative rate climbs the loss"),
    "OPTIM.MAX_EPOCH": Bound(1, why="with no epoch the untrained model would be saved and reported as trained"),
    "OPTIM.WEIGHT_DECAY": Bound(0, why="0: no decay"),
    "OPTIM.MOMENTUM": Bound(0, why="0: none"),
    "TRAIN.PRINT_FREQ": Bound(1, why="a progress line every that many steps"),
    "TRAIN.CHECKPOINT_FREQ": Bound(0, why="0: only the last epoch's model is kept"),
    "TRAIN.MAX_CONSECUTIVE_SKIPS": Bound(0, why="0: no limit"),
}


def _lookup(cfg: CN, key: str):
    """The value of a dotted ``key``, or None where the config lacks it (an older or trimmed config)."""
    node = cfg
    for part in key.split("."):
        if not isinstance(node, CN) or part not in node:
            return None
        node = node[part]
    return node


def check_engine_config(cfg: CN) -> None:
    """Refuse an engine key outside ``ENGINE_RANGES``, then run the checks registered with config extensions."""
    for key, bound in ENGINE_RANGES.items():
        value = _lookup(cfg, key)
        if value is not None and not bound.holds(value):
            raise ConfigError(f"{key} is {value!r}; valid: {bound} ({bound.why})")
    for check in extension_checks():
        check(cfg)
