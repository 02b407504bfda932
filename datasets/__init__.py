"""Benchmark dataset loaders and the embedded world (``world/``); importing this package registers every one in
``DATASET_REGISTRY``."""
from dassl.config import register_cfg_extension


@register_cfg_extension
def add_dataset_config(cfg) -> None:
    """``DATASET.SUBSAMPLE_CLASSES``: all | base | new (base = first ceil(n/2) sorted labels)."""
    cfg.DATASET.SUBSAMPLE_CLASSES = "all"


from . import (  # noqa: E402  (the extension must exist before a loader is built)
    caltech101,
    dtd,
    eurosat,
    fgvc_aircraft,
    food101,
    imagenet,
    imagenet_a,
    imagenet_r,
    imagenet_sketch,
    imagenetv2,
    oxford_flowers,
    oxford_pets,
    stanford_cars,
    sun397,
    ucf101,
    world,
)

__all__ = [
    "caltech101", "dtd", "eurosat", "fgvc_aircraft", "food101", "imagenet", "imagenet_a", "imagenet_r",
    "imagenet_sketch", "imagenetv2", "oxford_flowers", "oxford_pets", "stanford_cars", "sun397", "ucf101", "world",
]
