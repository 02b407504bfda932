"""The base class every benchmark loader builds on: CoOp's split files, few-shot caches, base/new classes.

A loader sets a few class attributes (folder names, split file) and, when it has no split JSON or
can rebuild one, overrides ``build_split`` or ``read_splits``. ``BenchmarkDataset.__init__`` then
runs the order every CoOp-family dataset follows:

1. check the layout on disk (one error naming the first missing path and the DATASETS.md section);
2. read the split JSON, or build it from the raw annotations and save it;
3. with ``DATASET.NUM_SHOTS >= 1``, load or draw the few-shot subset (``split_fewshot/shot_K-seed_S.pkl``);
4. keep the base or new half of the classes (``DATASET.SUBSAMPLE_CLASSES``), relabelled from 0.

The pickled caches hold ``dassl.data.datasets.base_dataset.Datum`` objects with absolute paths, the
same format upstream writes, so existing caches keep working in both directions. Ours also store the
fingerprint of the split they were drawn from (an extra key upstream ignores): a cache drawn from
another version of the split, or under another data root, is drawn again rather than reused.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import os.path as osp
import pickle
import random
from collections import defaultdict
from collections.abc import Iterable, Sequence

from dassl.data.datasets import DatasetBase, Datum
from dassl.data.datasets.base_dataset import items_fingerprint
from dassl.utils import ConfigError, DataError, atomic_write_bytes, listdir_nohidden, mkdir_if_missing

__all__ = ["BenchmarkDataset", "SUBSAMPLE_CHOICES", "first_missing_file", "split_fingerprint"]

logger = logging.getLogger(__name__)

SUBSAMPLE_CHOICES = ("all", "base", "new")
SPLIT_NAMES = ("train", "val", "test")

Entry = tuple[str, int, str]  # (image path, label, class name)

# The few-shot cache's key for the fingerprint of the split it was drawn from (upstream reads only train/val).
CACHE_SPLIT_KEY = "split_fingerprint"


def split_fingerprint(train: Sequence[Datum], val: Sequence[Datum] | None, test: Sequence[Datum] | None,
                      root: str) -> str:
    """sha256 (hex) of a whole split, every entry of train, val and test in order, paths relative to ``root``."""
    parts = (("train", train), ("val", val), ("test", test))
    text = "".join(f"{name} {items_fingerprint(items, root)}\n" for name, items in parts)
    return hashlib.sha256(text.encode()).hexdigest()


def first_missing_file(paths: Iterable[str]) -> tuple[str | None, int]:
    """Return (first missing path, number missing), listing each folder once instead of one stat per file."""
    listings: dict[str, set[str] | None] = {}
    first, count = None, 0
    for path in paths:
        folder, name = osp.split(path)
        if folder not in listings:
            listings[folder] = set(os.listdir(folder)) if osp.isdir(folder) else None
        names = listings[folder]
        if names is None or name not in names:
            first = first or path
            count += 1
    return first, count


class BenchmarkDataset(DatasetBase):
    """A CoOp-layout dataset under ``DATASET.ROOT``; subclasses describe their layout in class attributes."""

    dataset_dir = ""  # folder under DATASET.ROOT, e.g. "caltech-101"
    short_name = ""  # config file stem and DATASETS.md anchor, e.g. "caltech101"
    image_dir = ""  # folder the split file's paths are relative to; "" = the dataset folder itself
    split_file = ""  # CoOp's split JSON inside the dataset folder; "" = the loader reads its own files
    required_paths: tuple[str, ...] = ()  # paths (relative to the dataset folder) every load needs
    raw_split_paths: tuple[str, ...] | None = None  # what build_split reads; None = the split JSON is required
    evaluation_only = False  # True for targets that are never few-shot sampled nor subsampled
    fewshot_val = True  # False when val is the test set (ImageNet): the cache then holds only "train"

    def __init__(self, cfg):
        root = osp.abspath(osp.expanduser(cfg.DATASET.ROOT))
        cls = type(self)
        self.dataset_dir = osp.join(root, cls.dataset_dir)
        self.image_dir = osp.join(self.dataset_dir, cls.image_dir) if cls.image_dir else self.dataset_dir
        self.split_path = osp.join(self.dataset_dir, cls.split_file) if cls.split_file else ""
        self.split_fewshot_dir = osp.join(self.dataset_dir, "split_fewshot")

        missing = cls.first_missing_layout_path(self.dataset_dir)
        if missing is not None:
            raise self.missing_error(missing, root=root)

        train, val, test = self.read_splits()
        # What the run read, before few-shot and subsampling: ties the few-shot cache (and the run) to it.
        self.split_fingerprint = split_fingerprint(train, val, test, self.dataset_dir)
        if not cls.evaluation_only:
            mkdir_if_missing(self.split_fewshot_dir)
            num_shots = cfg.DATASET.NUM_SHOTS
            if num_shots >= 1:
                self.check_enough_shots(train, num_shots)
                train, val = self.load_or_draw_fewshot(train, val, num_shots, cfg.SEED, self.split_fingerprint)
            subsample = cfg.DATASET.get("SUBSAMPLE_CLASSES", "all")
            n_classes = len({item.label for item in train})
            train, val, test = self.subsample_classes(train, val, test, subsample=subsample)
            self.check_several_classes(train, subsample, n_classes)
        super().__init__(train_x=train, val=val, test=test)

    @property
    def content_fingerprint(self) -> dict[str, str | None]:
        """sha256 of the split read ("split", every entry before few-shot and subsampling) and of the
        train_x / val / test lists the run uses; paths relative to the dataset folder."""
        return {"split": self.split_fingerprint, **super().content_fingerprint}

    # ------------------------------------------------------------------ layout and errors

    @classmethod
    def where_documented(cls) -> str:
        """The pointer every error ends with; generated datasets override it."""
        return f"see DATASETS.md#{cls.short_name}"

    def missing_error(self, path: str, what: str = "", root: str | None = None) -> FileNotFoundError:
        """One-line error naming the dataset, the missing path and the DATASETS.md section."""
        if not what:
            what = {self.dataset_dir: "dataset folder", self.split_path: "split file"}.get(path, "path")
        under = f" (DATASET.ROOT={root})" if root and path == self.dataset_dir else ""
        if path == self.split_path and self.raw_split_paths:
            under = f" (or, to rebuild it, {', '.join(self.raw_split_paths)})"
        return FileNotFoundError(f"{type(self).__name__}: missing {what} {path}{under}; {self.where_documented()}")

    @classmethod
    def content_error(cls, source: str, detail: str) -> DataError:
        """One-line error for bad content in a data file, naming the file and the entry."""
        return DataError(f"{cls.__name__}: {source}: {detail}; {cls.where_documented()}")

    @classmethod
    def first_missing_layout_path(cls, dataset_dir: str) -> str | None:
        """The first path of the expected layout that is absent (images aside), or None."""
        for path in [dataset_dir, *(osp.join(dataset_dir, p) for p in cls.required_paths)]:
            if not osp.exists(path):
                return path
        if cls.split_file:
            split_path = osp.join(dataset_dir, cls.split_file)
            if not osp.exists(split_path):
                raw = cls.raw_split_paths
                if raw is None or not all(osp.exists(osp.join(dataset_dir, p)) for p in raw):
                    return split_path
        return None

    @classmethod
    def first_missing_image(cls, dataset_dir: str) -> tuple[str | None, int]:
        """(first missing image, count) among the images the split file lists; subclasses may widen it."""
        if not cls.split_file or not osp.exists(osp.join(dataset_dir, cls.split_file)):
            return None, 0
        image_dir = osp.join(dataset_dir, cls.image_dir) if cls.image_dir else dataset_dir
        splits = cls.parse_split_file(osp.join(dataset_dir, cls.split_file))
        return first_missing_file(osp.join(image_dir, rel) for entries in splits.values() for rel, _, _ in entries)

    # ------------------------------------------------------------------ split files

    def read_splits(self) -> tuple[list[Datum], list[Datum] | None, list[Datum]]:
        """(train, val, test): from the split JSON when present, else built from raw files and saved."""
        if osp.exists(self.split_path):
            return self.read_split(self.split_path, self.image_dir)
        train, val, test = self.build_split()
        self.save_split(train, val, test, self.split_path, self.image_dir)
        return train, val, test

    def build_split(self) -> tuple[list[Datum], list[Datum], list[Datum]]:
        """Build (train, val, test) from the raw annotations; datasets that can do so override this."""
        raise self.missing_error(self.split_path, "split file")

    def check_enough_shots(self, train: Sequence[Datum], num_shots: int) -> None:
        """Refuse ``num_shots`` when a class has fewer training images: the run would be labelled K shots
        while training on fewer (upstream silently takes what there is)."""
        counts: dict[int, int] = defaultdict(int)
        names: dict[int, str] = {}
        for item in train:
            counts[item.label] += 1
            names[item.label] = item.classname
        short = sorted((count, label) for label, count in counts.items() if count < num_shots)
        if short:
            fewest, label = short[0]
            source = self.split_path or self.dataset_dir
            raise DataError(
                f"{type(self).__name__}: DATASET.NUM_SHOTS {num_shots}, but {len(short)} of {len(counts)} classes "
                f'have fewer training images in {source} (fewest: class {label} "{names[label]}" with {fewest}); '
                f"valid: DATASET.NUM_SHOTS 1..{fewest}, or -1 for every image"
            )

    def check_several_classes(self, train: Sequence[Datum], subsample: str, n_before: int) -> None:
        """Refuse a one-class dataset: every prediction would be right, so accuracy is 100 % by construction."""
        names = sorted({item.classname for item in train})
        if len(names) >= 2:
            return
        where = f"{type(self).__name__} ({self.split_path or self.dataset_dir})"
        if n_before < 2:
            raise DataError(f"{where} holds one class ({names[0]!r}); a classification run needs at least 2")
        raise DataError(
            f'{where}: DATASET.SUBSAMPLE_CLASSES "{subsample}" leaves 1 of its {n_before} classes ({names[0]!r}), '
            f'and accuracy over one class is 100 % by construction; valid here: "all"'
            + (' or "base"' if n_before >= 3 else "")
        )

    @classmethod
    def parse_split_file(cls, filepath: str) -> dict[str, list[Entry]]:
        """Read and validate a CoOp split JSON: ``{"train"|"val"|"test": [[rel_path, label, classname], ...]}``."""
        name = cls.__name__

        def bad(detail: str) -> DataError:
            return DataError(f"{name}: split file {filepath}: {detail}; {cls.where_documented()}")

        try:
            with open(filepath) as f:
                raw = json.load(f)
        except json.JSONDecodeError as e:
            raise bad(f"not valid JSON ({e})") from e
        if not isinstance(raw, dict) or not all(isinstance(raw.get(s), list) for s in SPLIT_NAMES):
            raise bad('expected an object with lists "train", "val" and "test"')

        splits: dict[str, list[Entry]] = {}
        names: dict[int, str] = {}  # label -> class name
        labels: dict[str, int] = {}  # class name -> label: one entry with another label is a phantom class
        for split in SPLIT_NAMES:
            entries = []
            for i, entry in enumerate(raw[split]):
                where = f'entry {split}[{i}] {json.dumps(entry)}'
                if not (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[0], str)
                        and isinstance(entry[1], int) and not isinstance(entry[1], bool)
                        and isinstance(entry[2], str)):
                    raise bad(f"{where} is not [relative_path, integer_label, classname]")
                rel, label, classname = entry
                norm = osp.normpath(rel)
                if osp.isabs(rel) or norm == ".." or norm.startswith(".." + os.sep):
                    raise bad(f"{where} has a path outside the dataset folder")
                if label < 0:
                    raise bad(f"{where} has a negative label")
                if names.setdefault(label, classname) != classname:
                    raise bad(f'{where} names label {label} "{classname}", earlier "{names[label]}"')
                if labels.setdefault(classname, label) != label:
                    raise bad(
                        f'{where} gives class "{classname}" label {label}, earlier label {labels[classname]}; '
                        "each class has one label and one name"
                    )
                entries.append((rel, label, classname))
            splits[split] = entries

        train_labels = {label for _, label, _ in splits["train"]}
        if not train_labels:
            raise bad('"train" is empty')
        n_classes = max(train_labels) + 1
        empty = sorted(set(range(n_classes)) - train_labels)
        if empty:
            # Name the entry past the first gap: a label out of range, or a class left without images.
            i, (rel, label, _) = next((i, e) for i, e in enumerate(splits["train"]) if e[1] > empty[0])
            raise bad(
                f'entry train[{i}] "{rel}" has label {label}, but class {empty[0]} has no training image '
                f"(labels must be contiguous 0..n-1; {len(train_labels)} labels are used)"
            )
        for split in ("val", "test"):
            for i, (rel, label, _) in enumerate(splits[split]):
                if label >= n_classes:
                    raise bad(f'entry {split}[{i}] "{rel}" has label {label}, outside the class range 0..{n_classes - 1}')
        untested = sorted(train_labels - {label for _, label, _ in splits["test"]})
        if untested:
            # A class that is trained but never tested: usually a mislabelled train entry.
            i, (rel, label, _) = next((i, e) for i, e in enumerate(splits["train"]) if e[1] == untested[0])
            raise bad(
                f'class {label} "{names[label]}" (first at entry train[{i}] "{rel}") has no test image; '
                f"every class of 0..{n_classes - 1} needs one"
            )
        return splits

    # read_split, save_split and read_and_split_data are classmethods, so CoOp-fork dataset files that call
    # them on a class (``OxfordPets.read_split(path, prefix)``, ``DTD.read_and_split_data(dir)``) work as is.

    @classmethod
    def read_split(cls, filepath: str, path_prefix: str) -> tuple[list[Datum], list[Datum], list[Datum]]:
        """CoOp's ``read_split``: Datums with paths joined to ``path_prefix``, checked in bulk."""
        logger.info(f"Reading split from {filepath}")
        splits = cls.parse_split_file(filepath)
        return tuple(
            cls.to_datums(((osp.join(path_prefix, rel), y, c) for rel, y, c in splits[s]), source=filepath)
            for s in SPLIT_NAMES
        )

    @staticmethod
    def save_split(train, val, test, filepath: str, path_prefix: str) -> None:
        """CoOp's ``save_split``: paths made relative to ``path_prefix``; written atomically."""
        def relative(items):
            out = []
            for item in items:
                rel = item.impath.replace(path_prefix, "", 1).lstrip("/")
                out.append((rel, item.label, item.classname))
            return out

        split = {"train": relative(train), "val": relative(val), "test": relative(test)}
        text = json.dumps(split, indent=4, separators=(",", ": "))
        atomic_write_bytes(text.encode(), filepath)
        logger.info(f"Saved split to {filepath}")

    @classmethod
    def require_files(cls, paths: Iterable[str], source: str) -> None:
        """Raise one error naming the first of ``paths`` (listed in ``source``) that does not exist."""
        missing, count = first_missing_file(paths)
        if missing is not None:
            more = f" (and {count - 1} more)" if count > 1 else ""
            raise FileNotFoundError(
                f"{cls.__name__}: missing image listed in {source}{more}: {missing}; {cls.where_documented()}"
            )

    @classmethod
    def to_datums(cls, entries: Iterable[Entry], source: str) -> list[Datum]:
        """Datums for (absolute path, label, classname) entries, checking every file exists in one pass."""
        entries = list(entries)
        cls.require_files((path for path, _, _ in entries), source)
        return [Datum.from_verified(impath=p, label=y, classname=c) for p, y, c in entries]

    def read_text_lines(self, path: str) -> list[tuple[int, str]]:
        """(line number, stripped text) of the non-blank lines of an annotation file that must exist."""
        if not osp.isfile(path):
            raise self.missing_error(path, "annotation file")
        with open(path) as f:
            return [(n, line.strip()) for n, line in enumerate(f, start=1) if line.strip()]

    @staticmethod
    def split_trainval(trainval: Sequence[Datum], p_val: float = 0.2) -> tuple[list[Datum], list[Datum]]:
        """Per label, shuffle and move ``round(n * p_val)`` items to val (same draws as CoOp)."""
        logger.info(f"Splitting trainval into {1 - p_val:.0%} train and {p_val:.0%} val")
        indices_by_label: dict[int, list[int]] = defaultdict(list)
        for index, item in enumerate(trainval):
            indices_by_label[item.label].append(index)
        train, val = [], []
        for label, indices in indices_by_label.items():
            n_val = round(len(indices) * p_val)
            if n_val < 1:
                raise ValueError(f"split_trainval: class {label} has {len(indices)} images, too few for a val part")
            random.shuffle(indices)
            val.extend(trainval[i] for i in indices[:n_val])
            train.extend(trainval[i] for i in indices[n_val:])
        return train, val

    @classmethod
    def read_and_split_data(
        cls,
        image_dir: str,
        p_trn: float = 0.5,
        p_val: float = 0.2,
        ignored: Sequence[str] = (),
        new_cnames: dict[str, str] | None = None,
    ) -> tuple[list[Datum], list[Datum], list[Datum]]:
        """Split one-folder-per-class images per class into train/val/test (labels = sorted folder order)."""
        categories = sorted(c for c in listdir_nohidden(image_dir) if c not in ignored)
        logger.info(f"Splitting into {p_trn:.0%} train, {p_val:.0%} val, and {1 - p_trn - p_val:.0%} test")
        parts: tuple[list[Datum], list[Datum], list[Datum]] = ([], [], [])
        for label, category in enumerate(categories):
            category_dir = osp.join(image_dir, category)
            # Sorted before shuffling so the split depends on the seed only, not on the filesystem.
            images = [osp.join(category_dir, name) for name in listdir_nohidden(category_dir, sort=True)]
            random.shuffle(images)
            n_train, n_val = round(len(images) * p_trn), round(len(images) * p_val)
            if n_train < 1 or n_val < 1 or len(images) - n_train - n_val < 1:
                raise cls.content_error(category_dir, f"{len(images)} images are too few to split into train/val/test")
            classname = (new_cnames or {}).get(category, category)
            bounds = (0, n_train, n_train + n_val, len(images))
            for part, start, stop in zip(parts, bounds[:-1], bounds[1:]):
                part.extend(Datum.from_verified(impath=p, label=label, classname=classname) for p in images[start:stop])
        return parts

    # ------------------------------------------------------------------ few-shot caches

    def fewshot_cache_path(self, num_shots: int, seed: int) -> str:
        return osp.join(self.split_fewshot_dir, f"shot_{num_shots}-seed_{seed}.pkl")

    def load_or_draw_fewshot(self, train, val, num_shots: int, seed: int, split_digest: str | None = None):
        """Reuse ``split_fewshot/shot_K-seed_S.pkl`` when it was drawn from this split; otherwise draw and save it.

        ``split_digest`` is the split's ``split_fingerprint`` (computed from train and val when not given).
        A stale cache is drawn again, with one warning: with the seed set, the new draw is exactly what a
        first run on this split gets, so nothing is lost, and nothing from another split is trained on.
        """
        if split_digest is None:
            split_digest = split_fingerprint(train, val, None, self.dataset_dir)
        path = self.fewshot_cache_path(num_shots, seed)
        if osp.exists(path):
            cached = self._load_fewshot_cache(path)
            stale = self._stale_cache_reason(cached, train, val, num_shots, split_digest)
            if stale is None:
                logger.info(f"Loading preprocessed few-shot data from {path}")
                return cached["train"], (cached["val"] if self.fewshot_val else val)
            logger.warning(f"Few-shot cache {path} {stale}; drawing it again from the current split")
        train = self.generate_fewshot_dataset(train, num_shots=num_shots)
        cache = {"train": train}
        if self.fewshot_val:
            val = self.generate_fewshot_dataset(val, num_shots=min(num_shots, 4))
            cache["val"] = val
        cache[CACHE_SPLIT_KEY] = split_digest
        logger.info(f"Saving preprocessed few-shot data to {path}")
        atomic_write_bytes(pickle.dumps(cache, protocol=pickle.HIGHEST_PROTOCOL), path)
        return train, val

    def _stale_cache_reason(self, cached: dict, train, val, num_shots: int, split_digest: str) -> str | None:
        """Why a loaded cache cannot stand for this split's draw, or None when it can.

        Ours carry the split's fingerprint (paths relative to the dataset folder), so they must also point
        under this dataset folder. Upstream's carry none: each entry must then be an entry of the split's
        train / val part as it is now, and the train part must hold K images of every class.
        """
        parts = {"train": train, "val": val} if self.fewshot_val else {"train": train}
        stored = cached.get(CACHE_SPLIT_KEY)
        if stored is not None:
            if stored != split_digest:
                return f"was drawn from another version of the split (fingerprint {stored[:12]}, now {split_digest[:12]})"
            prefix = self.dataset_dir.rstrip(os.sep) + os.sep
            elsewhere = next((item for key in parts for item in cached[key] if not item.impath.startswith(prefix)), None)
            if elsewhere is not None:
                return f"lists {elsewhere.impath}, outside {self.dataset_dir} (drawn under another DATASET.ROOT)"
            return None
        for key, current in parts.items():
            entries = {(item.impath, item.label, item.classname) for item in current}
            foreign = next((item for item in cached[key] if (item.impath, item.label, item.classname) not in entries),
                           None)
            if foreign is not None:
                return (f'lists {foreign.impath} (label {foreign.label}, "{foreign.classname}"), which is not a '
                        f"{key} entry of the split under this DATASET.ROOT")
        counts: dict[int, int] = defaultdict(int)
        for item in cached["train"]:
            counts[item.label] += 1
        n_classes = len({item.label for item in train})
        if len(counts) != n_classes or any(count != num_shots for count in counts.values()):
            return (f"holds {sum(counts.values())} training images over {len(counts)} classes, "
                    f"not {num_shots} of each of {n_classes}")
        return None

    def _load_fewshot_cache(self, path: str) -> dict[str, list[Datum]]:
        try:
            with open(path, "rb") as f:
                cached = pickle.load(f)
        except Exception as e:  # a torn or foreign file: say which one and how to recover
            raise self.content_error(path, f"unreadable few-shot cache ({e}); delete it to draw it again") from e
        keys = ("train", "val") if self.fewshot_val else ("train",)
        if not isinstance(cached, dict) or not all(isinstance(cached.get(k), list) for k in keys):
            raise self.content_error(path, f"a few-shot cache must be a dict with lists {keys}; delete it to redraw")
        if not all(isinstance(item, Datum) for k in keys for item in cached[k]):
            raise self.content_error(path, "a few-shot cache's lists must hold Datum objects; delete it to redraw")
        return cached

    # ------------------------------------------------------------------ base / new classes

    @staticmethod
    def subsample_classes(*args: Sequence[Datum], subsample: str = "all") -> list[list[Datum]] | tuple:
        """Keep the first ceil(n/2) sorted labels of ``args[0]`` ("base") or the rest ("new"), relabelled from 0."""
        if subsample not in SUBSAMPLE_CHOICES:
            raise ConfigError(f'DATASET.SUBSAMPLE_CLASSES is "{subsample}"; valid choices: {list(SUBSAMPLE_CHOICES)}')
        if subsample == "all":
            return args
        labels = sorted({item.label for item in args[0]})
        half = math.ceil(len(labels) / 2)
        selected = labels[:half] if subsample == "base" else labels[half:]
        logger.info(f"SUBSAMPLE {subsample.upper()} CLASSES!")
        relabel = {old: new for new, old in enumerate(selected)}
        return [
            [
                Datum.from_verified(impath=item.impath, label=relabel[item.label], classname=item.classname)
                for item in items
                if item.label in relabel
            ]
            for items in args
        ]
