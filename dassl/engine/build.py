"""The trainer registry and ``build_trainer``."""
from __future__ import annotations

import logging

from dassl.utils import Registry, check_availability

__all__ = ["TRAINER_REGISTRY", "build_trainer"]

logger = logging.getLogger(__name__)

TRAINER_REGISTRY = Registry("TRAINER")


def build_trainer(cfg):
    """Instantiate the trainer named by ``cfg.TRAINER.NAME``; the error lists the registered ones."""
    name = cfg.TRAINER.NAME
    check_availability(
        name,
        TRAINER_REGISTRY.registered_names(),
        what='"TRAINER" registry (config key TRAINER.NAME; is the trainer module imported?)',
    )
    if cfg.VERBOSE:
        logger.info(f"Loading trainer: {name}")
    return TRAINER_REGISTRY.get(name)(cfg)
