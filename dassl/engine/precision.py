"""Mixed precision, decided once per run: the valid ``PREC`` values, what a device runs, and autocast.

``auto`` (every trainer's default) picks bf16 autocast where the device does it fast (a CUDA GPU with
bf16; a CPU whose flags show AMX or AVX-512 bf16) and fp32 elsewhere. ``fp32`` is the bit-exact reference:
on a CUDA device it turns TF32 off, which torch leaves on for cuDNN convolutions.
A CPU runs ``fp16``/``amp`` in fp32 unless ``GOPRO_TEST_CPU_FP16=1`` is set: a test-only switch that runs
them there as on a GPU (fp16 autocast, a GradScaler on the CPU) so their machinery is tested without one.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import os

import torch

from dassl.utils.errors import ConfigError

__all__ = [
    "PRECISIONS",
    "FAST_BF16_CPU_FLAGS",
    "CPU_FP16_ENV",
    "cpu_fp16_forced",
    "check_precision",
    "choose_precision",
    "resolve_precision",
    "requested_precision",
    "cpu_flags",
    "autocast_context",
    "build_grad_scaler",
    "ieee_fp32",
]

logger = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "fp16", "amp", "bf16")
# CPU feature flags (as /proc/cpuinfo names them) under which bf16 matrix products beat fp32.
FAST_BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
CPUINFO = "/proc/cpuinfo"
CPU_FP16_ENV = "GOPRO_TEST_CPU_FP16"  # test-only: "1" runs fp16/amp on the CPU as on a GPU


def cpu_fp16_forced() -> bool:
    """Whether the test-only switch ``GOPRO_TEST_CPU_FP16=1`` makes a CPU run ``fp16``/``amp`` in fp16."""
    return os.environ.get(CPU_FP16_ENV, "") == "1"


def check_precision(prec: str, key: str = "PREC") -> str:
    """``prec`` if it is a valid PREC value, else a one-line error naming ``key`` and the choices."""
    if prec not in PRECISIONS:
        raise ConfigError(f"{key} is {prec!r}; valid values: {', '.join(PRECISIONS)}")
    return prec


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags from /proc/cpuinfo (empty where the file does not exist)."""
    try:
        with open(CPUINFO) as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def _cuda_bf16(device: torch.device) -> bool:
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def choose_precision(prec: str, device: torch.device | str) -> tuple[str, str]:
    """(resolved precision ``fp32``/``fp16``/``bf16``, the reason) for a PREC value on ``device``.

    ``amp`` and ``fp16`` both mean fp16 autocast with loss scaling; the CPU runs them in fp32 (in fp16
    under the test-only ``GOPRO_TEST_CPU_FP16=1``).
    """
    prec = check_precision((prec or "auto").lower())
    device = torch.device(device)
    if prec == "fp32":
        return "fp32", "PREC fp32"
    if device.type == "cuda":
        if prec == "auto":
            if _cuda_bf16(device):
                return "bf16", "PREC auto: the GPU supports bf16"
            return "fp32", "PREC auto: the GPU has no bf16 (set PREC fp16 for fp16 autocast with loss scaling)"
        return ("bf16", "PREC bf16") if prec == "bf16" else ("fp16", f"PREC {prec}")
    if device.type == "cpu":
        fast = sorted(set(FAST_BF16_CPU_FLAGS) & cpu_flags())
        if prec == "auto":
            if fast:
                return "bf16", f"PREC auto: the CPU has {', '.join(fast)}"
            return "fp32", f"PREC auto: the CPU has none of {', '.join(FAST_BF16_CPU_FLAGS)}"
        if cpu_fp16_forced() and prec in ("fp16", "amp"):
            return "fp16", f"PREC {prec} on the CPU, forced by {CPU_FP16_ENV}=1 (a test-only switch)"
        if prec == "bf16":
            why = f"the CPU has {', '.join(fast)}" if fast else "slow here: the CPU has no bf16 instructions"
            return "bf16", f"PREC bf16 ({why})"
        return "fp32", f'PREC {prec}: fp16 autocast is not supported on CPU, so fp32'
    return "fp32", f"PREC {prec}: no low-precision path on {device.type}"


def resolve_precision(prec: str, device: torch.device | str) -> str:
    """The precision ``device`` runs for PREC ``prec``; logs which and why (a warning for a fallback)."""
    resolved, reason = choose_precision(prec, device)
    requested = (prec or "auto").lower()
    if requested in ("fp16", "amp") and resolved == "fp32":
        logger.warning(f'WARNING: precision "{requested}" is not supported on CPU; training in fp32 instead')
    elif resolved == "fp16" and torch.device(device).type == "cpu":
        logger.warning(f"Precision: {resolved} ({reason})")
    else:
        logger.info(f"Precision: {resolved} ({reason})")
    return resolved


def requested_precision(cfg, node: str) -> tuple[str, str]:
    """(PREC value, its key) from ``cfg.TRAINER.<node>.PREC``; ``("fp32", "")`` where there is none."""
    if node and node in cfg.TRAINER and "PREC" in cfg.TRAINER[node]:
        key = f"TRAINER.{node}.PREC"
        return check_precision(str(cfg.TRAINER[node].PREC).lower(), key), key
    return "fp32", ""


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


def ieee_fp32(precision: str, device: torch.device | str) -> bool:
    """Under fp32 on CUDA turn TF32 off for matrix products and cuDNN convolutions; True where it did.

    torch leaves TF32 on for convolutions, which round fp32 inputs to 10 mantissa bits, so an fp32 run
    would differ from the CPU's fp32 beyond rounding. The switch is process-wide and left off.
    """
    if precision != "fp32" or torch.device(device).type != "cuda":
        return False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    return True
