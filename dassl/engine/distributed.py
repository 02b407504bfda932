"""torch.distributed helpers: set-up from torchrun's environment, rank queries, reductions.

Every helper is a no-op (or the identity) in a single-process run, so the trainer calls them
unconditionally. The start is bounded (a process whose peers never arrive stops with one line), and
a user error under torchrun is printed by rank 0 alone (``user_error_prefix``).
"""
from __future__ import annotations

import datetime
import logging
import os
import time
from collections.abc import Iterable

import torch
import torch.distributed as dist

from dassl.utils.distributed import all_gather_objects, get_rank, get_world_size, is_distributed
from dassl.utils.errors import UserError

__all__ = [
    "is_distributed",
    "get_rank",
    "get_world_size",
    "is_main_process",
    "launched_by_torchrun",
    "launch_rank",
    "init_distributed_from_env",
    "DistributedStartError",
    "START_TIMEOUT_S",
    "PEER_ERROR_GRACE_S",
    "user_error_prefix",
    "select_device",
    "all_reduce_gradients",
    "broadcast_module",
    "any_across_ranks",
    "all_gather_objects",
]

logger = logging.getLogger(__name__)

# How long every process waits at the start for all of them to join (past it, a peer most likely stopped on
# an error); training collectives then get the long timeout of init_distributed_from_env.
START_TIMEOUT_S = 120
# How long a rank other than 0 waits, on a user error, for torchrun to end it (it does once rank 0 exits on the
# same error, which rank 0 prints) before printing the error itself.
PEER_ERROR_GRACE_S = 10.0


class DistributedStartError(UserError, RuntimeError):
    """The processes of a torchrun launch did not all reach the start in time."""


def is_main_process() -> bool:
    """Rank 0 alone logs, writes checkpoints and TensorBoard events."""
    return get_rank() == 0


def launched_by_torchrun() -> bool:
    """torchrun (and torch.distributed.launch) export WORLD_SIZE > 1 to every worker."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def launch_rank() -> int:
    """This process's global rank: the process group's, else torchrun's ``RANK`` (known before the group exists)."""
    if is_distributed():
        return get_rank()
    return int(os.environ.get("RANK", "0")) if launched_by_torchrun() else 0


def user_error_prefix(grace_s: float = PEER_ERROR_GRACE_S) -> str:
    """What this process puts before the user error it stops on: nothing on rank 0 or alone, at once.

    Another rank first waits ``grace_s``: when rank 0 stops on the same error (a typo, missing data), torchrun
    ends this rank meanwhile (SIGTERM, a non-zero exit), so the error is printed once. A rank still running
    then stopped on an error of its own: it names itself, ``rank N: ``.
    """
    rank = launch_rank()
    if rank == 0:
        return ""
    time.sleep(grace_s)
    return f"rank {rank}: "


def select_device(use_accelerator: bool) -> torch.device:
    """The accelerator when asked for and present (this rank's own, ``LOCAL_RANK``, under torchrun), else the CPU."""
    if not (use_accelerator and torch.accelerator.is_available()):
        return torch.device("cpu")
    kind = torch.accelerator.current_accelerator().type
    if launched_by_torchrun():
        return torch.device(kind, int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device(kind)


def init_distributed_from_env(
    use_accelerator: bool, timeout_min: int = 30, start_timeout_s: float = START_TIMEOUT_S
) -> bool:
    """Join the process group described by torchrun's env vars; nccl on GPU, gloo on CPU.

    Returns whether a group was (or already is) set up. A no-op when WORLD_SIZE is 1 or unset. Every process
    must join within ``start_timeout_s`` (else DistributedStartError, one line); later collectives time out
    after ``timeout_min`` minutes.
    """
    if not launched_by_torchrun():
        return False
    if dist.is_initialized():
        return True
    device = select_device(use_accelerator)
    if device.type != "cpu":
        torch.accelerator.set_device_index(device.index)
    backend = dist.get_default_backend_for_device(device)
    world_size = int(os.environ["WORLD_SIZE"])
    try:
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=start_timeout_s))
        if device.type == "cpu":
            dist.barrier()
        else:
            dist.barrier(device_ids=[device.index])
    except RuntimeError as err:  # torch's DistError (a store or collective timeout) is a RuntimeError
        if dist.is_initialized():
            dist.destroy_process_group()
        cause = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise DistributedStartError(
            f"process {launch_rank()} of {world_size}: not every process joined within {start_timeout_s:g} s "
            f"({backend}: {cause}); another one most likely stopped on an error it printed"
        ) from err
    dist.set_timeout(datetime.timedelta(minutes=timeout_min))
    logger.info(f"Initialised process group: backend={backend} world_size={dist.get_world_size()}")
    return True


def all_reduce_gradients(params: Iterable[torch.nn.Parameter]) -> None:
    """Average ``.grad`` across ranks (each rank's loss is a mean over its slice of the batch)."""
    if not is_distributed():
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    # One flat buffer per dtype: a single collective instead of one per tensor.
    world_size = dist.get_world_size()
    for dtype in {g.dtype for g in grads}:
        group = [g for g in grads if g.dtype == dtype]
        flat = torch.cat([g.reshape(-1) for g in group])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= world_size
        offset = 0
        for g in group:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()


def broadcast_module(module: torch.nn.Module, src: int = 0) -> None:
    """Give every rank rank ``src``'s parameters and buffers (identical starting weights)."""
    if not is_distributed():
        return
    for tensor in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(tensor.data, src=src)


def any_across_ranks(flag: bool, device: torch.device) -> bool:
    """True on every rank when ``flag`` is true on at least one (so all ranks take the same branch)."""
    if not is_distributed():
        return flag
    # gloo reduces CPU tensors, nccl needs them on the GPU.
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def progress_disabled() -> bool | None:
    """tqdm's ``disable``: no bar off rank 0, nor (None) when stderr is not a terminal, so a log file
    gets the per-step lines alone, never bars interleaved with them."""
    return None if is_main_process() else True
