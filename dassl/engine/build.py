"""The trainer registry and ``build_trainer``."""
from __future__ import annotations

import logging

from dassl.utils import Registry, check_availability

__all__ = ["TRAINER_REGISTRY", "build_trainer", "trainer_config_node"]

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


def trainer_config_node(trainer_name: str, trainer_cls: type | None = None) -> str:
    """The ``cfg.TRAINER.<node>`` a trainer reads (its PREC included): its ``CFG_NODE``, else its name upper-cased.

    ``trainer_cls`` defaults to the class registered as ``trainer_name``.
    """
    if trainer_cls is None:
        trainer_cls = TRAINER_REGISTRY.get(trainer_name)
    return getattr(trainer_cls, "CFG_NODE", "") or trainer_name.upper()
