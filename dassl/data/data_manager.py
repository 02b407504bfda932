"""``DataManager`` (dataset + transforms + loaders), ``DatasetWrapper`` and ``build_data_loader``."""
from __future__ import annotations

import logging
import multiprocessing
import weakref
from collections.abc import Sequence

import torch
import torch.distributed as dist
from PIL import Image, UnidentifiedImageError
from torch.utils.data import BatchSampler, DataLoader
from torch.utils.data import Dataset as TorchDataset
from torchvision.transforms import v2

from dassl.data.datasets import build_dataset
from dassl.data.sample_rng import SampleKey, sample_rng
from dassl.data.samplers import GlobalBatchSampler, SeededSampleBatches, ShardSampler, build_sampler
from dassl.data.transforms import INTERPOLATION_MODES, build_transform, to_tensor
from dassl.utils.distributed import get_rank, get_world_size, is_distributed
from dassl.utils.errors import UserError
from dassl.utils.tools import read_image

__all__ = [
    "BadImageError",
    "DataManager",
    "DatasetWrapper",
    "build_data_loader",
    "bad_image_count",
    "reset_bad_image_count",
]

logger = logging.getLogger(__name__)

# Errors PIL raises for unreadable or truncated files.
_IMAGE_ERRORS = (OSError, UnidentifiedImageError, SyntaxError, ValueError, Image.DecompressionBombError)
_WRAPPERS: weakref.WeakSet = weakref.WeakSet()


class BadImageError(UserError, RuntimeError):
    """An image file that cannot be decoded."""


# How to go on from a bad image: training may skip it; evaluation never substitutes one.
_TRAIN_HINT = (
    "set DATALOADER.SKIP_BAD_IMAGES True to skip such files in training, or find every bad image "
    "before a run with `python tools/check_data.py --decode`"
)
_EVAL_HINT = (
    "evaluation never skips an image (a substitute would bias the accuracy): replace the file, and find "
    "every bad image before a run with `python tools/check_data.py --decode`"
)


def bad_image_count() -> int:
    """Samples replaced because of a bad image (DATALOADER.SKIP_BAD_IMAGES), since the last reset.

    Counted across DataLoader worker processes; the engine logs it at the end of each epoch.
    """
    return sum(w.num_skipped for w in list(_WRAPPERS))


def reset_bad_image_count() -> None:
    for wrapper in list(_WRAPPERS):
        wrapper.reset_num_skipped()



class DatasetWrapper(TorchDataset):
    """Read, transform and label one ``Datum``: keys img (+ views), label, domain, impath, index.

    ``transform`` may be one transform (``img``), a list (``img``, ``img2``, ...) or a dict whose
    keys become the batch keys. With ``K_TRANSFORMS > 1`` (training only) each view is a list of K.
    A ``SampleKey`` instead of an index (a seeded run's training sampler) runs the transforms on
    generators seeded by the key: the sample's own randomness.
    """

    def __init__(self, cfg, data_source: Sequence, transform=None, is_train: bool = False):
        self.cfg = cfg
        self.data_source = data_source
        self.transform = transform
        self.is_train = is_train
        self.k_tfm = cfg.DATALOADER.K_TRANSFORMS if is_train else 1
        self.return_img0 = cfg.DATALOADER.RETURN_IMG0
        # Only training may substitute a bad image: in evaluation a duplicate would bias the accuracy.
        self.skip_bad_images = cfg.DATALOADER.SKIP_BAD_IMAGES and is_train
        if self.k_tfm > 1 and transform is None:
            raise ValueError(
                f"DATALOADER.K_TRANSFORMS={self.k_tfm} needs a transform, but the transform is None "
                "(INPUT.NO_TRANSFORM is set?)"
            )

        img0_steps = [v2.Resize(list(cfg.INPUT.SIZE), interpolation=INTERPOLATION_MODES[cfg.INPUT.INTERPOLATION])]
        img0_steps.append(to_tensor())
        if "normalize" in cfg.INPUT.TRANSFORMS:
            img0_steps.append(v2.Normalize(mean=cfg.INPUT.PIXEL_MEAN, std=cfg.INPUT.PIXEL_STD))
        img0_steps.append(v2.ToPureTensor())
        self.to_tensor = v2.Compose(img0_steps)

        # Shared with worker processes: a skip counter and a "warned already" flag per sample.
        self._skipped = multiprocessing.Value("l", 0) if self.skip_bad_images else None
        self._warned = multiprocessing.Array("b", len(data_source)) if self.skip_bad_images else None
        _WRAPPERS.add(self)

    def __len__(self) -> int:
        return len(self.data_source)

    @property
    def num_skipped(self) -> int:
        return self._skipped.value if self._skipped is not None else 0

    def reset_num_skipped(self) -> None:
        if self._skipped is not None:
            with self._skipped.get_lock():
                self._skipped.value = 0

    def _read(self, idx: int) -> Image.Image:
        impath = self.data_source[idx].impath
        try:
            return read_image(impath)
        except FileNotFoundError as err:
            raise BadImageError(f'Image file not found: "{impath}" (sample {idx})') from err
        except _IMAGE_ERRORS as err:
            raise BadImageError(f'Cannot read image "{impath}" (sample {idx}): {err}') from err

    def _read_or_substitute(self, idx: int) -> tuple[int, Image.Image]:
        """The image at ``idx``, or with SKIP_BAD_IMAGES the next readable sample after it."""
        if not self.skip_bad_images:
            try:
                return idx, self._read(idx)
            except BadImageError as err:
                raise BadImageError(f"{err}; {_TRAIN_HINT if self.is_train else _EVAL_HINT}") from err
        n = len(self.data_source)
        for offset in range(n):
            candidate = (idx + offset) % n
            try:
                return candidate, self._read(candidate)
            except BadImageError as err:
                with self._skipped.get_lock():
                    self._skipped.value += 1
                with self._warned.get_lock():
                    first_time = not self._warned[candidate]
                    self._warned[candidate] = 1
                if first_time:
                    logger.warning(f"Skipping bad image (DATALOADER.SKIP_BAD_IMAGES): {err}")
        raise BadImageError(f"No readable image among the {n} samples of this split")

    def _apply(self, tfm, img0: Image.Image):
        views = [tfm(img0) for _ in range(self.k_tfm)]
        return views[0] if len(views) == 1 else views

    def __getitem__(self, key: int | SampleKey) -> dict:
        if isinstance(key, SampleKey):
            with sample_rng(key):
                return self._load(key.index)
        return self._load(key)

    def _load(self, idx: int) -> dict:
        idx, img0 = self._read_or_substitute(idx)
        item = self.data_source[idx]
        output = {"label": item.label, "domain": item.domain, "impath": item.impath, "index": idx}

        if self.transform is None:
            output["img"] = img0
        elif isinstance(self.transform, dict):
            for key, tfm in self.transform.items():
                output[key] = self._apply(tfm, img0)
        elif isinstance(self.transform, (list, tuple)):
            for i, tfm in enumerate(self.transform):
                output["img" if i == 0 else f"img{i + 1}"] = self._apply(tfm, img0)
        else:
            output["img"] = self._apply(self.transform, img0)

        if self.return_img0:
            output["img0"] = self.to_tensor(img0)
        return output


def _shared_seed(cfg) -> int:
    """cfg.SEED, or (SEED < 0 under DDP) a random seed that rank 0 broadcasts to every rank."""
    if cfg.SEED >= 0:
        return cfg.SEED
    seed = [int(torch.randint(0, 2**31 - 1, ()).item())]
    if is_distributed():
        dist.broadcast_object_list(seed, src=0)
    return seed[0]


def build_data_loader(
    cfg,
    sampler_type: str = "SequentialSampler",
    data_source: Sequence | None = None,
    batch_size: int = 64,
    n_domain: int = 0,
    n_ins: int = 2,
    tfm=None,
    is_train: bool = True,
    dataset_wrapper=None,
    split: str = "",
) -> DataLoader:
    """A DataLoader over ``data_source``; ``drop_last`` only when training and ``len >= batch_size``.

    Training with RandomSampler and ``cfg.SEED >= 0``, or any training under DDP, uses the
    GlobalBatchSampler (``batch_size`` is the global batch); DDP evaluation gives each rank a shard.
    Training with ``cfg.SEED >= 0`` keys every sample with (SEED, epoch, index): see ``sample_rng``.
    """
    split_name = split or ("train" if is_train else "evaluation")
    if data_source is None or len(data_source) == 0:
        raise ValueError(
            f'The {split_name} split of dataset "{cfg.DATASET.NAME}" is empty (0 images); '
            f'check DATASET.ROOT ("{cfg.DATASET.ROOT}") and the dataset layout'
        )
    wrapper = (dataset_wrapper or DatasetWrapper)(cfg, data_source, transform=tfm, is_train=is_train)
    drop_last = is_train and len(data_source) >= batch_size
    distributed = is_distributed()
    loader_kwargs = dict(
        num_workers=cfg.DATALOADER.NUM_WORKERS,
        pin_memory=torch.cuda.is_available() and cfg.USE_CUDA,
    )

    seeded = is_train and cfg.SEED >= 0  # each sample's draws come from (SEED, epoch, index): see sample_rng
    stream = 1 if split == "train_u" else 0  # the unlabelled loader's sample i draws apart from the labelled one's
    global_batches = is_train and (distributed or (cfg.SEED >= 0 and sampler_type == "RandomSampler"))
    if global_batches:
        if sampler_type not in ("RandomSampler", "SequentialSampler"):
            raise ValueError(
                f'Sampler "{sampler_type}" is not supported for distributed training; '
                "use RandomSampler or SequentialSampler"
            )
        batch_sampler = GlobalBatchSampler(
            len(data_source),
            batch_size,
            seed=_shared_seed(cfg),
            drop_last=drop_last,
            shuffle=sampler_type == "RandomSampler",
            rank=get_rank(),
            world_size=get_world_size(),
        )
        if seeded:
            batch_sampler = SeededSampleBatches(batch_sampler, cfg.SEED, stream)
        return DataLoader(wrapper, batch_sampler=batch_sampler, **loader_kwargs)

    if distributed:  # evaluation: disjoint shards, no padding duplicates; the engine reduces counts
        sampler = ShardSampler(len(data_source), get_rank(), get_world_size())
    else:
        sampler = build_sampler(
            sampler_type, cfg=cfg, data_source=data_source, batch_size=batch_size, n_domain=n_domain, n_ins=n_ins
        )
    if seeded:
        batches = SeededSampleBatches(BatchSampler(sampler, batch_size, drop_last), cfg.SEED, stream)
        loader = DataLoader(wrapper, batch_sampler=batches, **loader_kwargs)
    else:
        loader = DataLoader(wrapper, batch_size=batch_size, sampler=sampler, drop_last=drop_last, **loader_kwargs)
    if len(loader) == 0 and not distributed:
        raise ValueError(
            f'The {split_name} loader of dataset "{cfg.DATASET.NAME}" has no batch '
            f"({len(data_source)} samples, sampler {sampler_type}, batch size {batch_size})"
        )
    return loader


class DataManager:
    """Build the dataset, its transforms and the train / val / test loaders from ``cfg``."""

    def __init__(self, cfg, custom_tfm_train=None, custom_tfm_test=None, dataset_wrapper=None):
        dataset = build_dataset(cfg)

        if custom_tfm_train is None:
            tfm_train = build_transform(cfg, is_train=True)
        else:
            logger.info("* Using custom transform for training")
            tfm_train = custom_tfm_train
        if custom_tfm_test is None:
            tfm_test = build_transform(cfg, is_train=False)
        else:
            logger.info("* Using custom transform for testing")
            tfm_test = custom_tfm_test

        loader_cfg = cfg.DATALOADER
        self.train_loader_x = build_data_loader(
            cfg,
            sampler_type=loader_cfg.TRAIN_X.SAMPLER,
            data_source=dataset.train_x,
            batch_size=loader_cfg.TRAIN_X.BATCH_SIZE,
            n_domain=loader_cfg.TRAIN_X.N_DOMAIN,
            n_ins=loader_cfg.TRAIN_X.N_INS,
            tfm=tfm_train,
            is_train=True,
            dataset_wrapper=dataset_wrapper,
            split="train_x",
        )

        self.train_loader_u = None
        if dataset.train_u:
            u_cfg = loader_cfg.TRAIN_X if loader_cfg.TRAIN_U.SAME_AS_X else loader_cfg.TRAIN_U
            self.train_loader_u = build_data_loader(
                cfg,
                sampler_type=u_cfg.SAMPLER,
                data_source=dataset.train_u,
                batch_size=u_cfg.BATCH_SIZE,
                n_domain=u_cfg.N_DOMAIN,
                n_ins=u_cfg.N_INS,
                tfm=tfm_train,
                is_train=True,
                dataset_wrapper=dataset_wrapper,
                split="train_u",
            )

        def eval_loader(data_source, split):
            return build_data_loader(
                cfg,
                sampler_type=loader_cfg.TEST.SAMPLER,
                data_source=data_source,
                batch_size=loader_cfg.TEST.BATCH_SIZE,
                tfm=tfm_test,
                is_train=False,
                dataset_wrapper=dataset_wrapper,
                split=split,
            )

        self.val_loader = eval_loader(dataset.val, "val") if dataset.val else None
        self.test_loader = eval_loader(dataset.test, "test")

        self._num_classes = dataset.num_classes
        self._num_source_domains = len(cfg.DATASET.SOURCE_DOMAINS)
        self._lab2cname = dataset.lab2cname
        self.dataset = dataset

        if cfg.VERBOSE:
            self.show_dataset_summary(cfg)

    @property
    def num_classes(self) -> int:
        return self._num_classes

    @property
    def num_source_domains(self) -> int:
        return self._num_source_domains

    @property
    def lab2cname(self) -> dict:
        return self._lab2cname

    def show_dataset_summary(self, cfg) -> None:
        """Log a table of the dataset name, domains, class count and split sizes."""
        from tabulate import tabulate  # lazy: only needed for this table

        dataset = self.dataset
        rows = [["Dataset", cfg.DATASET.NAME]]
        if cfg.DATASET.SOURCE_DOMAINS:
            rows.append(["Source", cfg.DATASET.SOURCE_DOMAINS])
        if cfg.DATASET.TARGET_DOMAINS:
            rows.append(["Target", cfg.DATASET.TARGET_DOMAINS])
        rows.append(["# classes", f"{self.num_classes:,}"])
        rows.append(["# train_x", f"{len(dataset.train_x):,}"])
        if dataset.train_u:
            rows.append(["# train_u", f"{len(dataset.train_u):,}"])
        if dataset.val:
            rows.append(["# val", f"{len(dataset.val):,}"])
        rows.append(["# test", f"{len(dataset.test):,}"])
        logger.info(tabulate(rows))
