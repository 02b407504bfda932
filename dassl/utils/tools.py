"""Small file, JSON, seeding and name-matching helpers (Dassl's ``dassl.utils.tools``)."""
from __future__ import annotations

import errno
import json
import os
import os.path as osp
import random
import urllib.request
import warnings
from difflib import SequenceMatcher
from typing import Any

import numpy as np
import PIL
import torch
from PIL import Image

from .errors import ConfigError, DataError

__all__ = [
    "mkdir_if_missing",
    "check_isfile",
    "read_json",
    "write_json",
    "set_random_seed",
    "download_url",
    "read_image",
    "collect_env_info",
    "listdir_nohidden",
    "get_most_similar_str_to_a_from_b",
    "check_availability",
    "tolist_if_not",
]


def mkdir_if_missing(dirname: str) -> None:
    """Create ``dirname`` (and parents) if it does not exist; tolerate a concurrent creation."""
    if not osp.exists(dirname):
        try:
            os.makedirs(dirname)
        except OSError as e:
            if e.errno != errno.EEXIST:
                raise


def check_isfile(fpath: str) -> bool:
    """Return whether ``fpath`` is a file, warning when it is not."""
    isfile = osp.isfile(fpath)
    if not isfile:
        warnings.warn(f'No file found at "{fpath}"', stacklevel=2)
    return isfile


def read_json(fpath: str) -> Any:
    """Load a JSON file; a parse error names the file."""
    with open(fpath) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f'Invalid JSON in "{fpath}": {e}') from e


def write_json(obj: Any, fpath: str) -> None:
    """Write ``obj`` as indented JSON, creating the parent directory."""
    mkdir_if_missing(osp.dirname(fpath) or ".")
    with open(fpath, "w") as f:
        json.dump(obj, f, indent=4, separators=(",", ": "))


def set_random_seed(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def download_url(url: str, dst: str) -> None:
    """Download ``url`` to ``dst`` (used only by optional dataset helpers)."""
    mkdir_if_missing(osp.dirname(dst) or ".")
    urllib.request.urlretrieve(url, dst)


def read_image(path: str) -> Image.Image:
    """Read an image file as a PIL RGB image; a missing file gives an error naming it.

    16-bit, 32-bit integer and float greyscale images are scaled to 8 bits (PIL's own conversion clips them).
    """
    if not osp.exists(path):
        raise FileNotFoundError(f'No file found at "{path}"')
    with Image.open(path) as img:
        if img.mode.startswith("I") or img.mode == "F":
            return _high_depth_to_8bit(img, path).convert("RGB")
        return img.convert("RGB")


def _high_depth_to_8bit(img: Image.Image, path: str) -> Image.Image:
    """An "L" image from a 16-bit ("I;16*"), 32-bit integer ("I") or float ("F") greyscale one.

    Integer images are read as 16-bit, 0..65535 (what PNG, TIFF and PGM store in these modes), float ones as
    0..1; a value outside that range has no known scale, so the file is refused rather than guessed at.
    """
    pixels = np.asarray(img)
    if img.mode == "F":
        full_scale, valid = 1.0, "0..1"
    else:
        full_scale, valid = 65535.0, "0..65535"
    if pixels.size:
        low, high = pixels.min(), pixels.max()
        if not (np.isfinite(low) and np.isfinite(high) and 0 <= low and high <= full_scale):
            raise DataError(
                f'"{path}": {img.mode}-mode greyscale image with values {low}..{high}, outside {valid}, '
                f"the range it is read in; save it as 8- or 16-bit PNG"
            )
    scaled = np.rint(pixels.astype(np.float64) * (255.0 / full_scale)).astype(np.uint8)
    return Image.fromarray(scaled)  # uint8 [H, W]: mode "L"


def collect_env_info() -> str:
    """Versions and devices that decide a run's numbers, without subprocesses (torch's collect_env
    runs pip, conda, nvidia-smi and lscpu, seconds on a loaded machine)."""
    import platform
    import sys

    import torchvision

    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    lines = [
        f"Python: {sys.version.split()[0]} on {platform.platform()}",
        f"PyTorch: {torch.__version__} (built with CUDA {torch.version.cuda}, cuDNN {cudnn})",
        f"torchvision: {torchvision.__version__}",
        f"Pillow: {PIL.__version__}",
        f"numpy: {np.__version__}",
        f"CPUs: {os.cpu_count()} (torch threads: {torch.get_num_threads()})",
    ]
    if torch.cuda.is_available():
        lines += [f"GPU {i}: {torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count())]
    else:
        lines.append("GPU: none available")
    return "\n".join(lines)


def listdir_nohidden(path: str, sort: bool = False) -> list[str]:
    """List ``path`` without names starting with "."; unsorted by default, as upstream."""
    items = [f for f in os.listdir(path) if not f.startswith(".")]
    if sort:
        items.sort()
    return items


def get_most_similar_str_to_a_from_b(a: str, b: list[str]) -> str:
    """Return the string in ``b`` closest to ``a`` by difflib's ratio."""
    best, best_ratio = "", -1.0
    for candidate in b:
        ratio = SequenceMatcher(None, a, candidate).ratio()
        if ratio > best_ratio:
            best, best_ratio = candidate, ratio
    return best


def check_availability(requested: str, available: list[str], what: str = "") -> None:
    """Raise ConfigError (a ValueError) listing ``available`` and the closest match when ``requested`` is missing."""
    if requested in available:
        return
    where = f" in {what}" if what else ""
    hint = ""
    if available:
        hint = f'; did you mean "{get_most_similar_str_to_a_from_b(requested, available)}"?'
    raise ConfigError(f'"{requested}" is not available{where}. Available: {sorted(available)}{hint}')


def tolist_if_not(x: Any) -> list:
    """Wrap a non-list in a list."""
    if not isinstance(x, list):
        x = [x]
    return x
