"""clip.load: an OpenAI name, an open_clip `ARCH:TAG`, or a checkpoint path -> a frozen CLIPBackbone.

clip.weights_file names the local file that a name or path loads from, without loading it.
"""
from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import open_clip
import torch

from .backbone import CLIPBackbone
from .checkpoint import build_clip_from_state_dict, read_state_dict
from .download import cache_dir, downloads_disabled, openai_checkpoint
from .errors import UnsupportedBackboneError, WeightsNotFoundError
from .names import OPENAI_MODELS, available_models

logger = logging.getLogger(__name__)

# "amp" keeps fp32 weights: autocast does the low-precision work.
_PRECISIONS = {"fp32": torch.float32, "amp": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def load(
    name_or_path: str,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    matmul_dtype: torch.dtype | None = None,
    cpu_fallback: bool = True,
) -> CLIPBackbone:
    """Load CLIP by OpenAI name (`ViT-B/16`), open_clip `ARCH:TAG`, or path to an OpenAI-format checkpoint.

    `precision`: fp32, amp (fp32 weights), fp16 or bf16; the CPU always gets fp32 (with a warning).
    `matmul_dtype`: load the weights only matrix products read in this dtype, for a run under that
    autocast (`CLIPBackbone.store_matmul_weights`); from a checkpoint file they never exist in fp32.
    `cpu_fallback=False` keeps fp16/bf16 weights on the CPU too, for a caller that runs them there on purpose.
    """
    dtype = resolve_dtype(precision, device, cpu_fallback)
    if name_or_path in OPENAI_MODELS or Path(name_or_path).is_file():
        path = openai_checkpoint(OPENAI_MODELS[name_or_path]) if name_or_path in OPENAI_MODELS else name_or_path
        # Built straight in the target dtype and device, one tensor at a time (see build_clip_from_state_dict).
        model = build_clip_from_state_dict(read_state_dict(path), f"'{path}'", dtype=dtype, device=device,
                                           matmul_dtype=matmul_dtype)
    elif ":" in name_or_path and "/" not in name_or_path:
        model = _load_open_clip(*name_or_path.split(":", 1)).to(device=device, dtype=dtype)
    elif "/" in name_or_path or Path(name_or_path).suffix:
        raise WeightsNotFoundError(
            f"CLIP checkpoint '{name_or_path}' does not exist (no such file), and it is not an OpenAI name "
            f"{available_models()}"
        )
    else:
        raise UnsupportedBackboneError(
            f"Unknown CLIP model '{name_or_path}': expected an OpenAI name {available_models()}, "
            f"an open_clip 'ARCH:TAG' (see open_clip.list_pretrained()), or a checkpoint path"
        )
    logger.info("Loaded CLIP '%s' (%s on %s)", name_or_path, dtype, device)
    backbone = CLIPBackbone(model)
    if matmul_dtype is not None:
        backbone.store_matmul_weights(matmul_dtype)  # marks the dtype; converts what open_clip loaded in fp32
    return backbone


# open_clip's default file name in a hub repository, and the safetensors file it looks for first.
_HUB_DEFAULT_FILE = "open_clip_pytorch_model.bin"
_HUB_SAFE_DEFAULT_FILE = "open_clip_model.safetensors"


def weights_file(name_or_path: str) -> str | None:
    """The local file `load(name_or_path)` reads its weights from, found without loading or downloading anything.

    A path is itself; an OpenAI name is its file in the cache; an open_clip `ARCH:TAG` is the file open_clip
    keeps in the cache (hub or URL download) when it is there. None when no such file exists here.
    """
    if name_or_path in OPENAI_MODELS:
        target = cache_dir() / OPENAI_MODELS[name_or_path].filename
        return str(target) if target.is_file() else None
    if Path(name_or_path).is_file():
        return str(name_or_path)
    if ":" in name_or_path and "/" not in name_or_path:
        return _open_clip_cached_file(*name_or_path.split(":", 1))
    return None


def _open_clip_cached_file(arch: str, tag: str) -> str | None:
    """The cached file of open_clip's pretrained weights `arch:tag` (None when not cached or unknown)."""
    try:
        cfg = open_clip.get_pretrained_cfg(arch, tag)
    except Exception:  # noqa: BLE001 - an unknown name has no file
        return None
    if not cfg:
        return None
    if cfg.get("file") and Path(cfg["file"]).is_file():
        return str(cfg["file"])
    folder = cache_dir()
    hub = cfg.get("hf_hub", "")
    if hub:
        from huggingface_hub import try_to_load_from_cache

        repo_id, filename = os.path.split(hub)
        filename = filename or _HUB_DEFAULT_FILE
        stem = filename.rsplit(".", 1)[0]
        safe = _HUB_SAFE_DEFAULT_FILE if filename == _HUB_DEFAULT_FILE else f"{stem}.safetensors"
        for candidate in (safe, filename):  # open_clip prefers the safetensors file
            found = try_to_load_from_cache(repo_id, candidate, cache_dir=str(folder))
            if isinstance(found, str) and Path(found).is_file():
                return found
    url = cfg.get("url", "")
    if url:
        target = folder / os.path.basename(url)
        if target.is_file():
            return str(target)
    return None


def resolve_dtype(precision: str, device: str | torch.device, cpu_fallback: bool = True) -> torch.dtype:
    """The weight dtype for `precision` on `device`; low precision on the CPU falls back to fp32 with a warning
    (as OpenAI's loader does) unless `cpu_fallback` is False."""
    if precision not in _PRECISIONS:
        raise ValueError(f"Unknown precision '{precision}'; expected one of {list(_PRECISIONS)}")
    dtype = _PRECISIONS[precision]
    if cpu_fallback and torch.device(device).type == "cpu" and dtype != torch.float32:
        warnings.warn(f"precision '{precision}' is not supported on the CPU; using fp32", stacklevel=3)
        return torch.float32
    return dtype


def _load_open_clip(arch: str, tag: str) -> torch.nn.Module:
    if arch not in open_clip.list_models():
        raise UnsupportedBackboneError(
            f"Unknown open_clip architecture '{arch}' in '{arch}:{tag}'; known: {open_clip.list_models()}"
        )
    if not open_clip.get_pretrained_cfg(arch, tag):
        raise UnsupportedBackboneError(
            f"Unknown open_clip weights '{arch}:{tag}'; tags for {arch}: {open_clip.list_pretrained_tags_by_model(arch)}"
        )
    folder = cache_dir()
    try:
        return open_clip.create_model(arch, pretrained=tag, cache_dir=str(folder))
    except Exception as err:  # hub, URL and file errors differ; all mean the weights are unavailable here
        reason = "Downloads are off (HF_HUB_OFFLINE=1)." if downloads_disabled() else f"Loading failed ({err})."
        raise WeightsNotFoundError(
            f"open_clip weights '{arch}:{tag}' could not be loaded: they are not cached in '{folder}' "
            f"(set $CLIP_CACHE to the folder that holds them). {reason}"
        ) from err
