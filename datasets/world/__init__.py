"""The embedded world: a seeded generator of CoOp-style datasets and of the corpus its small CLIP learned from.

``vocab`` (caption words), ``render`` (pixels) and ``digits`` (real images) feed ``tasks`` (the downstream
label spaces) and ``corpus`` (the pretraining stream); ``gen`` writes the trees on disk and ``loaders``
registers them in ``DATASET_REGISTRY`` (importing this package does).
"""
from .loaders import BASE_TO_NEW, DG_TARGETS, WorldDataset, task_of, world_spec

__all__ = ["BASE_TO_NEW", "DG_TARGETS", "WorldDataset", "task_of", "world_spec"]
