"""What the ranks of a run report together: the start-up description, training terms over the global batch, counts.

Each function is a collective under torch.distributed (every rank calls it at the same point, rank 0 logs the
answer) and the identity of the single-process case otherwise.
"""
from __future__ import annotations

import socket
from collections.abc import Sequence

import torch
import torch.distributed as dist

from dassl.utils.distributed import all_gather_objects, get_world_size

__all__ = ["StepTerms", "describe_ranks", "sum_across_ranks"]


class StepTerms:
    """The terms the training steps of an epoch returned on this rank (losses, accuracy), weighted by images.

    ``update`` is local; ``global_values`` combines every rank's: a term's value on the latest global batch is
    the mean of the ranks' values weighted by their images, and its average is over every image of the epoch.
    """

    def __init__(self):
        self._latest: dict[str, tuple[float, int]] = {}  # name -> (value, images) of this rank's latest step
        self._totals: dict[str, tuple[float, int]] = {}  # name -> (sum of value x images, images) this epoch

    def update(self, terms: dict | None, images: int) -> None:
        """Add one step's ``terms`` (floats or one-element tensors), computed on ``images`` images of this rank."""
        for name, value in (terms or {}).items():
            value = float(value.item() if torch.is_tensor(value) else value)
            self._latest[name] = (value, images)
            total, count = self._totals.get(name, (0.0, 0))
            self._totals[name] = (total + value * images, count + images)

    def global_values(self) -> dict[str, tuple[float, float]]:
        """name -> (value on the latest global batch, average over the epoch's images so far), in first-seen order.

        A collective: every rank must call it at the same steps.
        """
        latest: dict[str, list[float]] = {}
        totals: dict[str, list[float]] = {}
        for rank_latest, rank_totals in all_gather_objects((self._latest, self._totals)):
            for name, (value, images) in rank_latest.items():
                weighted = latest.setdefault(name, [0.0, 0])
                weighted[0] += value * images
                weighted[1] += images
            for name, (total, count) in rank_totals.items():
                summed = totals.setdefault(name, [0.0, 0])
                summed[0] += total
                summed[1] += count
        return {name: (_ratio(*latest[name]), _ratio(*totals[name])) for name in latest}


def _ratio(total: float, count: float) -> float:
    return total / count if count else 0.0


def sum_across_ranks(values: Sequence[float]) -> list[float]:
    """Element-wise sums of every rank's ``values`` (a collective; ``list(values)`` in one process)."""
    parts = all_gather_objects(list(values))
    return [sum(column) for column in zip(*parts, strict=True)]


def describe_ranks(device: torch.device, train_batch: int, test_batch: int) -> str | None:
    """One line that says how a distributed run splits its work (None in one process).

    ``train_batch`` is the global training batch (split evenly over the ranks); ``test_batch`` is per process.
    A collective: every rank must call it.
    """
    world_size = get_world_size()
    hosts_and_devices = all_gather_objects((socket.gethostname(), str(device)))
    if world_size == 1:
        return None
    several_hosts = len({host for host, _ in hosts_and_devices}) > 1
    devices = ", ".join(
        f"rank {rank} {dev}" + (f" on {host}" if several_hosts else "")
        for rank, (host, dev) in enumerate(hosts_and_devices)
    )
    return (
        f"Distributed run: world size {world_size}, backend {dist.get_backend()}; devices: {devices}; training batch "
        f"{train_batch // world_size} per process x {world_size} processes = {train_batch} global "
        f"(DATALOADER.TRAIN_X.BATCH_SIZE is the global batch); evaluation batch {test_batch} per process. "
        "Logged training losses and accuracy are over the global batch."
    )
