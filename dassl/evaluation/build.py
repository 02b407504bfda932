"""The evaluator registry and ``build_evaluator``."""
from __future__ import annotations

import logging

from dassl.utils import Registry, check_availability

__all__ = ["EVALUATOR_REGISTRY", "build_evaluator"]

logger = logging.getLogger(__name__)

EVALUATOR_REGISTRY = Registry("EVALUATOR")


def build_evaluator(cfg, **kwargs):
    """Instantiate the evaluator registered as ``cfg.TEST.EVALUATOR`` with ``(cfg, **kwargs)``."""
    name = cfg.TEST.EVALUATOR
    check_availability(name, EVALUATOR_REGISTRY.registered_names(), what="EVALUATOR registry (cfg.TEST.EVALUATOR)")
    if cfg.VERBOSE:
        logger.info(f"Loading evaluator: {name}")
    return EVALUATOR_REGISTRY.get(name)(cfg, **kwargs)
