"""Trainer lifecycle, registry, precision and distributed helpers (Dassl's ``dassl.engine``)."""
from .build import TRAINER_REGISTRY, build_trainer, trainer_config_node
from .evaluate import evaluate_saved_model
from .interrupt import TrainingInterrupted
from .precision import resolve_precision
from .run_state import ConfigMismatchError
from .trainer import SimpleTrainer, TrainerBase, TrainerX

__all__ = [
    "TRAINER_REGISTRY",
    "build_trainer",
    "trainer_config_node",
    "TrainerBase",
    "SimpleTrainer",
    "TrainerX",
    "evaluate_saved_model",
    "resolve_precision",
    "TrainingInterrupted",
    "ConfigMismatchError",
]
