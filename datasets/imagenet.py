"""ImageNet-1k (CoOp layout: ``imagenet/images/{train,val}/<wnid>/`` + ``classnames.txt``), and the
shared reading of wnid folders that the ImageNet variants reuse."""
from __future__ import annotations

import os
import os.path as osp
import pickle

from tqdm import tqdm

from dassl.data.datasets import DATASET_REGISTRY, Datum
from dassl.utils import atomic_write_bytes

from .base import BenchmarkDataset, first_missing_file


class ImageNetFolders(BenchmarkDataset):
    """Reads ``classnames.txt`` and one-folder-per-wnid image trees (not registered itself)."""

    def read_classnames(self) -> dict[str, str]:
        """wnid -> class name from ``classnames.txt`` (lines ``<wnid> <name with spaces>``, sorted by wnid)."""
        path = osp.join(self.dataset_dir, "classnames.txt")
        classnames = {}
        for n, line in self.read_text_lines(path):
            wnid, _, name = line.partition(" ")
            if not name:
                raise self.content_error(path, f'line {n} "{line}" is not "<wnid> <class name>"')
            classnames[wnid] = name.strip()
        return classnames

    def read_wnid_folders(self, folder: str, classnames: dict[str, str]) -> list[Datum]:
        """Datums of ``folder/<wnid>/*``: label = index of the wnid among the sorted sub-folders."""
        with os.scandir(folder) as entries:
            listing = [e for e in entries if not e.name.startswith(".")]
        wnids = sorted(e.name for e in listing if e.is_dir())
        if not wnids:
            loose = sum(e.is_file() for e in listing)
            raise self.content_error(
                folder, f"no class folders ({loose} loose files); images must sit in one folder per wnid"
            )
        unknown = [w for w in wnids if w not in classnames]
        if unknown:
            raise self.content_error(folder, f'folder "{unknown[0]}" is not a wnid listed in classnames.txt')
        items = []
        # Sorted listings: the order, and so the few-shot draw, does not depend on the filesystem.
        for label, wnid in enumerate(tqdm(wnids, desc=f"Reading {folder}", disable=len(wnids) < 100)):
            class_dir = osp.join(folder, wnid)
            items += [
                Datum.from_verified(impath=osp.join(class_dir, name), label=label, classname=classnames[wnid])
                for name in sorted(os.listdir(class_dir))
                if not name.startswith(".")
            ]
        return items


@DATASET_REGISTRY.register()
class ImageNet(ImageNetFolders):
    """ImageNet-1k; the test set doubles as val, and the parsed lists are cached in ``preprocessed.pkl``."""

    template = "a photo of a {}."  # zero-shot prompt (CoOp's)
    dataset_dir = "imagenet"
    short_name = "imagenet"
    image_dir = "images"
    required_paths = ("images/train", "images/val", "classnames.txt")
    fewshot_val = False  # val is the test set; the few-shot cache holds only "train", as upstream

    @classmethod
    def first_missing_image(cls, dataset_dir: str):
        """A train class folder with no counterpart in ``images/val`` (e.g. a flat, unsorted val)."""
        folders = {}
        for split in ("train", "val"):
            with os.scandir(osp.join(dataset_dir, "images", split)) as entries:
                folders[split] = {e.name for e in entries if e.is_dir() and not e.name.startswith(".")}
        absent = sorted(folders["train"] - folders["val"])
        return (osp.join(dataset_dir, "images", "val", absent[0]) if absent else None), len(absent)

    def read_splits(self):
        cache = osp.join(self.dataset_dir, "preprocessed.pkl")
        train_dir = osp.join(self.image_dir, "train")
        if osp.exists(cache):
            train, test = self._load_preprocessed(cache, train_dir)
        else:
            classnames = self.read_classnames()
            train = self.read_wnid_folders(train_dir, classnames)
            test = self.read_wnid_folders(osp.join(self.image_dir, "val"), classnames)
            train_names, test_names = {d.classname for d in train}, {d.classname for d in test}
            if train_names != test_names:
                raise self.content_error(
                    osp.join(self.image_dir, "val"),
                    f"holds {len(test_names)} class folders but images/train holds {len(train_names)}; "
                    "labels would not match",
                )
            atomic_write_bytes(pickle.dumps({"train": train, "test": test}, protocol=pickle.HIGHEST_PROTOCOL), cache)
        return train, test, test

    def _load_preprocessed(self, cache: str, train_dir: str):
        """Load ``preprocessed.pkl``, refusing a stale one (other class count, or images that moved)."""
        with open(cache, "rb") as f:
            data = pickle.load(f)
        if not isinstance(data, dict) or not all(isinstance(data.get(k), list) and data[k] for k in ("train", "test")):
            raise self.content_error(cache, 'expected a dict with non-empty lists "train" and "test"; delete it to rebuild')
        n_folders = sum(1 for e in os.scandir(train_dir) if e.is_dir() and not e.name.startswith("."))
        n_classes = max(d.label for d in data["train"]) + 1
        if n_classes != n_folders:
            raise self.content_error(
                cache, f"holds {n_classes} classes but {train_dir} has {n_folders} class folders; delete it to rebuild"
            )
        # Checking every path would cost one stat per image; the ends of both lists catch a moved root.
        ends = [data[k][i].impath for k in ("train", "test") for i in (0, -1)]
        missing, _ = first_missing_file(ends)
        if missing is not None:
            raise self.content_error(cache, f"lists {missing}, which does not exist; delete it to rebuild")
        return data["train"], data["test"]


class ImageNetVariant(ImageNetFolders):
    """An evaluation-only ImageNet variant: ``<image_dir>/<wnid>/`` folders, names via ``classnames.txt``."""

    evaluation_only = True

    def read_splits(self):
        data = self.read_wnid_folders(self.image_dir, self.read_classnames())
        return data, None, data
