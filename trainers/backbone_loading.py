"""The frozen CLIP of a run, loaded from MODEL.BACKBONE.NAME in the weight dtype its precision needs."""
from __future__ import annotations

import logging

import torch

import clip
from dassl.utils import ConfigError

__all__ = ["load_clip", "matmul_dtype"]

logger = logging.getLogger(__name__)


def matmul_dtype(resolved: str) -> torch.dtype | None:
    """The dtype a run of resolved precision ``resolved`` keeps the backbone's matrix weights in (None: as loaded)."""
    return torch.bfloat16 if resolved == "bf16" else None


def load_clip(cfg, device: torch.device | str, requested: str, resolved: str):
    """Load the frozen backbone named by MODEL.BACKBONE.NAME.

    Weights are fp16 when PREC is "fp16" and the device runs it (a GPU; a CPU under the test-only switch
    that runs fp16 there, so the fp16-weight path is tested without a GPU). Under bf16 (auto or bf16 resolved so),
    the weights that only matrix products read are stored in bf16, exactly what autocast computes with,
    at half their memory; the rest stays fp32. Otherwise fp32 weights and autocast, which keeps norms fp32.
    """
    weights = "fp16" if requested == "fp16" and resolved == "fp16" else "fp32"
    name = cfg.MODEL.BACKBONE.NAME
    if not name:
        raise ConfigError(
            "MODEL.BACKBONE.NAME is empty; set a CLIP name (e.g. ViT-B/16) or a checkpoint path"
        )
    try:
        # The engine resolved fp16 for this device, so fp16 weights are wanted wherever it is.
        model = clip.load(name, device=device, precision=weights, matmul_dtype=matmul_dtype(resolved),
                          cpu_fallback=False)
    except clip.BackboneLoadError as err:
        err.add_note("(set by MODEL.BACKBONE.NAME)")
        raise
    model.requires_grad_(False)
    if model.matmul_dtype == torch.bfloat16:
        low = sum(p.numel() * p.element_size() for p in model.parameters() if p.dtype == torch.bfloat16)
        logger.info("Backbone matrix weights kept in bf16 for bf16 autocast (%.0f MiB)", low / 2**20)
    return model.eval()
