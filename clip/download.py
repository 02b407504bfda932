"""The weight cache: where OpenAI checkpoints live, and a checked download when they are missing."""
from __future__ import annotations

import hashlib
import logging
import os
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from .errors import CorruptDownloadError, WeightsNotFoundError
from .names import OpenAIModel

logger = logging.getLogger(__name__)

_TRUE_VALUES = {"1", "true", "yes", "on"}
_CHUNK_BYTES = 1 << 20
_CONNECT_TIMEOUT_S = 30


def cache_dir() -> Path:
    """The folder holding OpenAI checkpoints: `$CLIP_CACHE`, else `~/.cache/clip`."""
    return Path(os.environ.get("CLIP_CACHE") or Path.home() / ".cache" / "clip").expanduser()


def downloads_disabled() -> bool:
    """True when the user asked for offline mode (`HF_HUB_OFFLINE=1`, as the tests set)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE_VALUES


def missing_weights_message(model: OpenAIModel, folder: Path, reason: str) -> str:
    """One message that names the file, the folder it belongs in, and where to get it."""
    return (
        f"CLIP weights for '{model.name}' not found: put '{model.filename}' in '{folder}' "
        f"(or set $CLIP_CACHE to the folder that holds it). {reason} "
        f"The file is at {model.url}"
    )


def openai_checkpoint(model: OpenAIModel) -> Path:
    """The local path of `model`'s weights, downloading them first when allowed and missing."""
    folder = cache_dir()
    target = folder / model.filename
    if target.is_file():
        return target
    if downloads_disabled():
        raise WeightsNotFoundError(missing_weights_message(model, folder, "Downloads are off (HF_HUB_OFFLINE=1)."))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        _download_checked(model.url, target, model.sha256)
    except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
        raise WeightsNotFoundError(
            missing_weights_message(model, folder, f"Downloading it failed ({err}).")
        ) from err
    return target


def _download_checked(url: str, target: Path, sha256: str) -> None:
    """Stream `url` to `target` with a progress bar; keep it only if its SHA-256 matches."""
    # Write to a side file and rename, so an interrupted download never looks like a cached checkpoint.
    partial = target.with_name(target.name + ".part")
    digest = hashlib.sha256()
    logger.info("Downloading %s to %s", url, target)
    with urllib.request.urlopen(url, timeout=_CONNECT_TIMEOUT_S) as source, open(partial, "wb") as sink:
        total = int(source.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=target.name) as progress:
            while chunk := source.read(_CHUNK_BYTES):
                sink.write(chunk)
                digest.update(chunk)
                progress.update(len(chunk))
    if digest.hexdigest() != sha256:
        partial.unlink(missing_ok=True)
        raise CorruptDownloadError(
            f"Downloaded {url} but its SHA-256 is {digest.hexdigest()}, expected {sha256}; "
            f"nothing was saved to {target}"
        )
    partial.replace(target)
