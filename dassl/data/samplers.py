"""Index samplers: torch's Random/Sequential, Dassl's domain and class samplers, the seeded
global-batch sampler that gives every DDP rank its slice of one process's batches, and the wrapper
that keys a seeded run's training samples with (seed, epoch, index).
"""
from __future__ import annotations

import copy
import random
from collections import defaultdict
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import RandomSampler, Sampler, SequentialSampler

from dassl.utils.errors import ConfigError

from .sample_rng import SampleKey

__all__ = [
    "AVAILABLE_SAMPLERS",
    "RandomDomainSampler",
    "SeqDomainSampler",
    "RandomClassSampler",
    "GlobalBatchSampler",
    "SeededSampleBatches",
    "ShardSampler",
    "build_sampler",
]

AVAILABLE_SAMPLERS = [
    "RandomSampler",
    "SequentialSampler",
    "RandomDomainSampler",
    "SeqDomainSampler",
    "RandomClassSampler",
]


def _indices_by(data_source: Sequence, attr: str) -> dict[int, list[int]]:
    groups: dict[int, list[int]] = defaultdict(list)
    for i, item in enumerate(data_source):
        groups[getattr(item, attr)].append(i)
    return groups


class RandomDomainSampler(Sampler):
    """Each batch draws ``n_domain`` random domains and ``batch_size / n_domain`` images from each.

    Stops once a chosen domain has too few images left (no replacement).
    """

    def __init__(self, data_source: Sequence, batch_size: int, n_domain: int):
        self.domain_dict = _indices_by(data_source, "domain")
        self.domains = list(self.domain_dict.keys())
        if n_domain is None or n_domain <= 0:
            n_domain = len(self.domains)
        if batch_size % n_domain != 0:
            raise ConfigError(
                f"the loader's BATCH_SIZE {batch_size} must be divisible by its N_DOMAIN ({n_domain}; "
                "DATALOADER.TRAIN_X / TRAIN_U): each batch takes as many images from every domain"
            )
        self.n_domain = n_domain
        self.n_img_per_domain = batch_size // n_domain
        self.length = len(list(self.__iter__()))

    def _choose_domains(self) -> list[int]:
        return random.sample(self.domains, self.n_domain)

    def __iter__(self) -> Iterator[int]:
        remaining = copy.deepcopy(self.domain_dict)
        final: list[int] = []
        while True:
            batch = []
            for domain in self._choose_domains():
                pool = remaining[domain]
                if len(pool) < self.n_img_per_domain:
                    return iter(final)
                chosen = random.sample(pool, self.n_img_per_domain)
                batch.extend(chosen)
                for idx in chosen:
                    pool.remove(idx)
            final.extend(batch)

    def __len__(self) -> int:
        return self.length


class SeqDomainSampler(RandomDomainSampler):
    """Like RandomDomainSampler, but every batch holds all domains in sorted order."""

    def __init__(self, data_source: Sequence, batch_size: int):
        super().__init__(data_source, batch_size, n_domain=0)
        self.domains.sort()

    def _choose_domains(self) -> list[int]:
        return self.domains


class RandomClassSampler(Sampler):
    """Each batch holds ``batch_size // n_ins`` classes with ``n_ins`` images each.

    A class with fewer than ``n_ins`` images is upsampled with replacement.
    """

    def __init__(self, data_source: Sequence, batch_size: int, n_ins: int):
        if batch_size < n_ins:
            raise ValueError(f"batch_size={batch_size} must be no less than n_ins={n_ins}")
        self.index_dic = _indices_by(data_source, "label")
        self.labels = list(self.index_dic.keys())
        self.n_ins = n_ins
        self.ncls_per_batch = batch_size // n_ins
        # An estimate, as upstream: the number of full n_ins chunks over all classes.
        self.length = 0
        for idxs in self.index_dic.values():
            num = max(len(idxs), n_ins)
            self.length += num - num % n_ins

    def __iter__(self) -> Iterator[int]:
        chunks: dict[int, list[list[int]]] = defaultdict(list)
        for label in self.labels:
            idxs = list(self.index_dic[label])
            if len(idxs) < self.n_ins:
                idxs = np.random.choice(idxs, size=self.n_ins, replace=True).tolist()
            random.shuffle(idxs)
            for start in range(0, len(idxs) - self.n_ins + 1, self.n_ins):
                chunks[label].append(idxs[start : start + self.n_ins])
        avai_labels = [label for label in self.labels if chunks[label]]
        final: list[int] = []
        while len(avai_labels) >= self.ncls_per_batch:
            for label in random.sample(avai_labels, self.ncls_per_batch):
                final.extend(chunks[label].pop(0))
                if not chunks[label]:
                    avai_labels.remove(label)
        return iter(final)

    def __len__(self) -> int:
        return self.length


class GlobalBatchSampler(Sampler[list[int]]):
    """Batches of one seeded permutation per epoch; rank ``r`` yields the r-th slice of each.

    ``batch_size`` is the global batch. With world size 1 this yields the whole global batch, so
    one process and the union of N processes see identical batches. The epoch comes from
    ``set_epoch``; without it, every new iteration advances to the next epoch. Every rank gets the
    same number of samples (per-rank losses are averaged with equal weights, and all_gather needs
    equal sizes): the global batch must divide by the world size, and under DDP a final partial
    batch is cut to a multiple of it.
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        seed: int,
        drop_last: bool = False,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
    ):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        if batch_size % world_size != 0:
            raise ConfigError(
                f"DATALOADER.TRAIN_X.BATCH_SIZE {batch_size} is the global batch and must be divisible by the "
                f"number of processes ({world_size}); use a multiple of {world_size}"
            )
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.seed = seed
        self.drop_last = drop_last
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _order(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(self.num_samples))
        generator = torch.Generator()
        generator.manual_seed((self.seed * 1_000_003 + epoch) % (2**63))
        return torch.randperm(self.num_samples, generator=generator).tolist()

    def _global_batches(self, order: list[int]) -> list[list[int]]:
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        if batches and len(batches[-1]) < self.batch_size:
            if self.drop_last:
                batches.pop()
            else:
                batches[-1] = batches[-1][: len(batches[-1]) - len(batches[-1]) % self.world_size]
                if not batches[-1]:
                    batches.pop()
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        epoch = self.epoch
        self.epoch += 1  # the next iteration draws the next epoch unless set_epoch says otherwise
        for batch in self._global_batches(self._order(epoch)):
            yield [part.tolist() for part in torch.tensor(batch).tensor_split(self.world_size)][self.rank]

    def __len__(self) -> int:
        return len(self._global_batches(list(range(self.num_samples))))


class SeededSampleBatches(Sampler[list[SampleKey]]):
    """The batches of the batch sampler ``batches``, each index as ``SampleKey(seed, epoch, index, stream)``.

    The epoch comes from ``set_epoch`` (and is passed on to ``batches``); without it, every new
    iteration is the next epoch. ``state_dict`` holds that epoch for the run's checkpoint.
    """

    def __init__(self, batches, seed: int, stream: int = 0):
        if seed < 0:
            raise ValueError(f"SeededSampleBatches needs a seed >= 0, got {seed}")
        self.batches = batches
        self.seed = seed
        self.stream = stream
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[SampleKey]]:
        epoch = self.epoch
        self.epoch += 1
        if hasattr(self.batches, "set_epoch"):
            self.batches.set_epoch(epoch)
        for batch in self.batches:
            yield [SampleKey(self.seed, epoch, int(index), self.stream) for index in batch]

    def __len__(self) -> int:
        return len(self.batches)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        self.epoch = int(state["epoch"])


class ShardSampler(Sampler[int]):
    """Rank ``r``'s contiguous, disjoint share of ``range(num_samples)`` (no padding duplicates)."""

    def __init__(self, num_samples: int, rank: int, world_size: int):
        self.indices = torch.arange(num_samples).tensor_split(world_size)[rank].tolist()

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def build_sampler(
    sampler_type: str,
    cfg=None,
    data_source: Sequence | None = None,
    batch_size: int = 32,
    n_domain: int = 0,
    n_ins: int = 16,
) -> Sampler:
    """The index sampler named ``sampler_type`` over ``data_source``."""
    if sampler_type == "RandomSampler":
        return RandomSampler(data_source)
    if sampler_type == "SequentialSampler":
        return SequentialSampler(data_source)
    if sampler_type == "RandomDomainSampler":
        return RandomDomainSampler(data_source, batch_size, n_domain)
    if sampler_type == "SeqDomainSampler":
        return SeqDomainSampler(data_source, batch_size)
    if sampler_type == "RandomClassSampler":
        return RandomClassSampler(data_source, batch_size, n_ins)
    raise ConfigError(f'Unknown sampler type "{sampler_type}"; valid choices: {AVAILABLE_SAMPLERS}')
