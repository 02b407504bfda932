"""The frozen CLIP of a run, loaded from MODEL.BACKBONE.NAME in the weight dtype its precision needs."""
from __future__ import annotations

import torch

import clip
from dassl.utils import ConfigError

__all__ = ["load_clip"]


def load_clip(cfg, device: torch.device | str, requested: str, resolved: str):
    """Load the frozen backbone named by MODEL.BACKBONE.NAME.

    Weights are fp16 only when PREC is "fp16" and the device runs it; auto/amp/bf16 keep fp32 weights
    and rely on autocast, which also keeps LayerNorm in fp32.
    """
    weights = "fp16" if requested == "fp16" and resolved == "fp16" else "fp32"
    name = cfg.MODEL.BACKBONE.NAME
    if not name:
        raise ConfigError(
            "MODEL.BACKBONE.NAME is empty; set a CLIP name (e.g. ViT-B/16) or a checkpoint path"
        )
    try:
        model = clip.load(name, device=device, precision=weights)
    except clip.BackboneLoadError as err:
        err.add_note("(set by MODEL.BACKBONE.NAME)")
        raise
    model.requires_grad_(False)
    return model.eval()
