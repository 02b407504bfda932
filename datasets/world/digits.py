"""The world's real images: scikit-learn's 8x8 handwritten digits (UCI), split once into two disjoint parts.

Per class, a fixed permutation (independent of every config) puts ``PRETRAIN_SHARE`` of the images in
the pretraining part and the rest in the downstream part, so no seed or split size can leak a
downstream image into the corpus the shipped CLIP was pretrained on.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

PRETRAIN_SHARE = 0.18
_PARTITION_SEED = 20231120  # fixed: the partition must not move with DATASET.WORLD.SEED


@lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:  # pragma: no cover - requirements.txt lists scikit-learn
        raise ImportError("the world's digits come from scikit-learn; pip install scikit-learn") from e
    data = load_digits()
    return (data.images / 16.0).astype(np.float64), data.target.astype(np.int64)


@lru_cache(maxsize=2)
def digit_part(part: str) -> tuple[tuple[np.ndarray, ...], ...]:
    """Per digit 0-9, the glyphs ([8, 8] in [0, 1]) of ``part`` ("pretrain" or "downstream"), in a fixed order."""
    if part not in ("pretrain", "downstream"):
        raise ValueError(f"Unknown digits part {part!r}; expected 'pretrain' or 'downstream'")
    images, targets = _digits()
    rng = np.random.default_rng(_PARTITION_SEED)
    out = []
    for digit in range(10):
        idx = np.flatnonzero(targets == digit)
        idx = idx[rng.permutation(len(idx))]
        n_pretrain = int(round(PRETRAIN_SHARE * len(idx)))
        chosen = idx[:n_pretrain] if part == "pretrain" else idx[n_pretrain:]
        out.append(tuple(images[i] for i in chosen))
    return tuple(out)
