"""Randomness that belongs to the sample: a training sample's draws come from generators seeded by
(seed, epoch, sample index), so what it looks like does not depend on which process or DataLoader
worker reads it, nor on what that process read before.

A seeded run's training sampler yields ``SampleKey``s; ``DatasetWrapper`` reads a keyed sample inside
``sample_rng(key)``. Transforms keep drawing from the global generators (torchvision's do), which that
context seeds from the key and puts back afterwards.
"""
from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import torch

__all__ = ["SampleKey", "sample_rng"]


class SampleKey(NamedTuple):
    """One sample of one epoch of a run seeded with ``seed`` (``index`` into the dataset of loader ``stream``:
    0 for the labelled training data, 1 for the unlabelled, so equal indices of the two draw differently)."""

    seed: int
    epoch: int
    index: int
    stream: int = 0


def _seeds(key: SampleKey) -> tuple[int, int, list[int]]:
    """Independent seeds for torch, python and numpy, hashed from the key (SeedSequence mixes its fields)."""
    words = [int(w) for w in np.random.SeedSequence((key.seed, key.epoch, key.index, key.stream)).generate_state(6)]
    return (words[0] << 32) | words[1], (words[2] << 32) | words[3], words[4:]


@contextlib.contextmanager
def sample_rng(key: SampleKey) -> Iterator[None]:
    """Run the block with torch's CPU, python's and numpy's global generators seeded from ``key``; restore them after.

    Restoring keeps the caller's streams (dropout, samplers) independent of how many samples it read.
    """
    torch_seed, python_seed, numpy_seed = _seeds(key)
    saved = torch.get_rng_state(), random.getstate(), np.random.get_state()
    torch.default_generator.manual_seed(torch_seed)  # the CPU generator only: CUDA streams are the trainer's
    random.seed(python_seed)
    np.random.seed(numpy_seed)
    try:
        yield
    finally:
        torch.set_rng_state(saved[0])
        random.setstate(saved[1])
        np.random.set_state(saved[2])
