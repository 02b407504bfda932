"""``Datum`` (one labelled image) and ``DatasetBase`` (the train/val/test lists of a dataset).

The attribute names of ``Datum`` (``_impath``, ``_label``, ``_domain``, ``_classname``) and this
module path are part of the on-disk format: few-shot caches written by upstream Dassl pickle
``dassl.data.datasets.base_dataset.Datum`` objects, and they load here unchanged.
"""
from __future__ import annotations

import hashlib
import logging
import os
import random
from collections import defaultdict
from collections.abc import Sequence

from dassl.utils.errors import DataError
from dassl.utils.tools import check_isfile

__all__ = ["Datum", "DatasetBase", "items_fingerprint"]

logger = logging.getLogger(__name__)


class Datum:
    """One data instance: image path, label, domain and class name (read-only)."""

    def __init__(self, impath: str = "", label: int = 0, domain: int = 0, classname: str = ""):
        if not isinstance(impath, str):
            raise TypeError(f"Datum impath must be a str, got {type(impath).__name__}: {impath!r}")
        if not check_isfile(impath):
            raise FileNotFoundError(f'Datum: no image file at "{impath}"')
        self._impath = impath
        self._label = label
        self._domain = domain
        self._classname = classname

    @classmethod
    def from_verified(cls, impath: str, label: int = 0, domain: int = 0, classname: str = "") -> Datum:
        """Build a Datum without the per-file check, for callers that verified the files in bulk."""
        item = cls.__new__(cls)
        item._impath = impath
        item._label = label
        item._domain = domain
        item._classname = classname
        return item

    @property
    def impath(self) -> str:
        return self._impath

    @property
    def label(self) -> int:
        return self._label

    @property
    def domain(self) -> int:
        return self._domain

    @property
    def classname(self) -> str:
        return self._classname

    def __repr__(self) -> str:
        return f"Datum(impath={self._impath!r}, label={self._label}, domain={self._domain}, classname={self._classname!r})"


def items_fingerprint(items: Sequence[Datum] | None, root: str = "") -> str | None:
    """sha256 (hex) of the items' (path, label, class name) in order, paths relative to ``root`` when under it.

    Relative paths keep the digest the same when the data root moves; the order is content too, since the
    few-shot draw depends on it. None for an absent list.
    """
    if items is None:
        return None
    prefix = root.rstrip(os.sep) + os.sep if root else ""
    cut = len(prefix)
    digest = hashlib.sha256()
    for item in items:
        path = item.impath[cut:] if prefix and item.impath.startswith(prefix) else item.impath
        digest.update(f"{path}\t{item.label}\t{item.classname}\n".encode())
    return digest.hexdigest()


class DatasetBase:
    """Holds the data lists; class count and names are derived from ``train_x`` only (as upstream)."""

    dataset_dir = ""  # the folder under DATASET.ROOT (subclasses set it)
    domains: list[str] = []  # domain names, for multi-domain datasets

    def __init__(self, train_x=None, train_u=None, val=None, test=None):
        self._train_x = train_x
        self._train_u = train_u
        self._val = val
        self._test = test
        self._num_classes = self.get_num_classes(train_x) if train_x else 0
        self._lab2cname, self._classnames = self.get_lab2cname(train_x) if train_x else ({}, [])
        if train_x:
            self._check_labels(train_x, val, test)

    def _check_labels(self, train_x, val, test) -> None:
        # A gap in the train labels makes the text classifier shorter than the label range
        # (the "991 logits for labels up to 999" failure); say which labels are absent instead.
        missing = sorted(set(range(self._num_classes)) - set(self._lab2cname))
        if missing:
            raise DataError(
                f"{type(self).__name__}: train labels must be contiguous 0..{self._num_classes - 1}, "
                f"but labels {missing[:10]} have no training image"
            )
        for split_name, items in (("val", val), ("test", test)):
            for item in items or ():
                if not 0 <= item.label < self._num_classes:
                    raise DataError(
                        f"{type(self).__name__}: {split_name} item {item.impath!r} has label {item.label}, "
                        f"outside the training classes 0..{self._num_classes - 1}"
                    )
        if self._num_classes < 2:
            # One class: every prediction is right, so the reported accuracy would be 100 % by construction.
            raise DataError(
                f"{type(self).__name__}: the training data holds one class ({self._classnames[0]!r}); "
                "a classification run needs at least 2 classes"
            )

    @property
    def content_fingerprint(self) -> dict[str, str | None]:
        """sha256 of what the dataset holds: {"train_x", "val", "test"} (see ``items_fingerprint``).

        Paths are taken relative to ``dataset_dir``; loaders that read a split file add "split".
        """
        root = self.dataset_dir if isinstance(self.dataset_dir, str) else ""
        return {name: items_fingerprint(items, root)
                for name, items in (("train_x", self._train_x), ("val", self._val), ("test", self._test))}

    @property
    def train_x(self):
        return self._train_x

    @property
    def train_u(self):
        return self._train_u

    @property
    def val(self):
        return self._val

    @property
    def test(self):
        return self._test

    @property
    def lab2cname(self) -> dict[int, str]:
        return self._lab2cname

    @property
    def classnames(self) -> list[str]:
        return self._classnames

    @property
    def num_classes(self) -> int:
        return self._num_classes

    @staticmethod
    def get_num_classes(data_source: Sequence[Datum]) -> int:
        """Number of classes = largest label + 1."""
        return max(item.label for item in data_source) + 1

    @staticmethod
    def get_lab2cname(data_source: Sequence[Datum]) -> tuple[dict[int, str], list[str]]:
        """Label -> class name mapping, and the names ordered by label."""
        mapping = {item.label: item.classname for item in data_source}
        labels = sorted(mapping)
        return {label: mapping[label] for label in labels}, [mapping[label] for label in labels]

    def check_input_domains(self, source_domains: Sequence[str], target_domains: Sequence[str]) -> None:
        """Raise if a source or target domain is not one of ``self.domains``."""
        self.is_input_domain_valid(source_domains)
        self.is_input_domain_valid(target_domains)

    def is_input_domain_valid(self, input_domains: Sequence[str]) -> None:
        for domain in input_domains:
            if domain not in self.domains:
                raise ValueError(f"Input domain must belong to {self.domains}, but got [{domain}]")

    def generate_fewshot_dataset(self, *data_sources, num_shots: int = -1, repeat: bool = False):
        """Draw ``num_shots`` items per label from each source with ``random.sample``.

        Labels are visited in order of first appearance, so a fixed seed reproduces upstream's draw.
        """
        if num_shots < 1:
            return data_sources[0] if len(data_sources) == 1 else data_sources
        logger.info(f"Creating a {num_shots}-shot dataset")
        output = []
        for data_source in data_sources:
            fewshot = []
            groups = self.split_dataset_by_label(data_source)
            for items in groups.values():
                if len(items) >= num_shots:
                    fewshot.extend(random.sample(items, num_shots))
                elif repeat:
                    fewshot.extend(random.choices(items, k=num_shots))
                else:
                    fewshot.extend(items)
            short = [len(items) for items in groups.values() if len(items) < num_shots]
            if short and not repeat:  # the run is named after num_shots; say once that some classes have fewer
                logger.warning(
                    f"WARNING: Few-shot draw of {num_shots} per class: {len(short)} of {len(groups)} classes have fewer "
                    f"items (fewest: {min(short)}), and all of theirs are taken"
                )
            output.append(fewshot)
        return output[0] if len(output) == 1 else output

    @staticmethod
    def split_dataset_by_label(data_source: Sequence[Datum]) -> dict[int, list[Datum]]:
        """Group items by label, keeping the order in which labels first appear."""
        groups: dict[int, list[Datum]] = defaultdict(list)
        for item in data_source:
            groups[item.label].append(item)
        return groups

    @staticmethod
    def split_dataset_by_domain(data_source: Sequence[Datum]) -> dict[int, list[Datum]]:
        """Group items by domain, keeping the order in which domains first appear."""
        groups: dict[int, list[Datum]] = defaultdict(list)
        for item in data_source:
            groups[item.domain].append(item)
        return groups
