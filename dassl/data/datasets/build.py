"""The dataset registry and ``build_dataset``."""
from __future__ import annotations

import logging

from dassl.utils import Registry, check_availability

__all__ = ["DATASET_REGISTRY", "build_dataset"]

logger = logging.getLogger(__name__)

DATASET_REGISTRY = Registry("DATASET")


def build_dataset(cfg):
    """Instantiate the dataset class registered as ``cfg.DATASET.NAME``."""
    available = DATASET_REGISTRY.registered_names()
    check_availability(cfg.DATASET.NAME, available, what="DATASET registry (cfg.DATASET.NAME)")
    if cfg.VERBOSE:
        logger.info(f"Loading dataset: {cfg.DATASET.NAME}")
    return DATASET_REGISTRY.get(cfg.DATASET.NAME)(cfg)
