"""Mixed precision: which precision a device can run, and the matching autocast context."""
from __future__ import annotations

import contextlib
import logging

import torch

__all__ = ["PRECISIONS", "resolve_precision", "autocast_context", "build_grad_scaler"]

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "amp", "bf16")
# (requested, device type) pairs already warned about, so a run warns once, not per call.
_warned: set[tuple[str, str]] = set()


def resolve_precision(prec: str, device: torch.device | str) -> str:
    """Map a requested precision to what ``device`` runs: ``fp32``, ``fp16`` or ``bf16``.

    ``amp`` and ``fp16`` both mean fp16 autocast with loss scaling; on CPU everything runs in fp32.
    """
    prec = (prec or "fp32").lower()
    if prec not in PRECISIONS:
        raise ValueError(f'Unknown precision "{prec}"; choose one of {list(PRECISIONS)}')
    device_type = torch.device(device).type
    if prec == "fp32":
        return "fp32"
    if device_type == "cpu":
        if (prec, device_type) not in _warned:
            _warned.add((prec, device_type))
            logger.warning(f'Precision "{prec}" is not supported on CPU; training in fp32 instead')
        return "fp32"
    return "bf16" if prec == "bf16" else "fp16"


def autocast_context(precision: str, device: torch.device | str):
    """Autocast for a resolved precision (``fp16``/``bf16``); a null context for ``fp32``."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def build_grad_scaler(precision: str, device: torch.device | str) -> torch.amp.GradScaler | None:
    """A GradScaler for fp16 (whose small range needs loss scaling); None otherwise."""
    if precision != "fp16":
        return None
    return torch.amp.GradScaler(torch.device(device).type)
