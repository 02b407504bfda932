"""Rank queries that every layer of the engine needs; each is the identity in a single process."""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist

__all__ = ["is_distributed", "get_rank", "get_world_size", "all_gather_objects", "all_gather_rows", "global_batch_apply"]


def is_distributed() -> bool:
    """True inside an initialised process group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def all_gather_objects(obj) -> list:
    """Every rank's ``obj``, in rank order (``[obj]`` in a single process)."""
    if not is_distributed():
        return [obj]
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def all_gather_rows(x: torch.Tensor) -> torch.Tensor:
    """Every rank's rows of ``x`` concatenated in rank order, without autograd (for frozen features)."""
    if not is_distributed():
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


def global_batch_apply(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(``fn`` over the global batch, this rank's rows of that output) for frozen per-rank rows ``x``.

    Every rank gathers the same global batch and applies ``fn`` to all of it, so batch statistics inside
    ``fn`` (BatchNorm) and in-batch negatives equal one process's; gradients flow through ``fn`` only.
    Ranks must hold equally many rows (the global batch sampler's slices are equal).
    """
    out = fn(all_gather_rows(x))
    rows = x.shape[0]
    return out, out[get_rank() * rows : (get_rank() + 1) * rows]
