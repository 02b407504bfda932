"""Loading a trained prompt learner for evaluation: strict about learned keys, blind to class-set buffers."""
from __future__ import annotations

import logging
import os

from dassl.utils import load_checkpoint, load_state_dict_checked

__all__ = ["load_learned_state"]

logger = logging.getLogger(__name__)

# Class-name buffers of upstream checkpoints: rebuilt for the current class set, so never loaded.
_CLASS_SET_KEYS = ("token_prefix", "token_suffix")


def load_learned_state(trainer, directory: str, epoch: int | None = None) -> None:
    """Load every registered model's learned parameters; missing learned keys are an error."""
    if not directory:
        logger.warning("Note that load_model() is skipped as no pretrained model is given")
        return
    filename = "model-best.pth.tar" if epoch is None else f"model.pth.tar-{epoch}"
    for name in trainer.get_model_names():
        path = os.path.join(directory, name, filename)
        if not os.path.exists(path):
            raise FileNotFoundError(f'Model not found at "{path}"')
        checkpoint = load_checkpoint(path)
        load_state_dict_checked(trainer._models[name], checkpoint["state_dict"], path, _CLASS_SET_KEYS)
        logger.info('Loaded model weights from "%s" (epoch = %s)', path, checkpoint.get("epoch"))
