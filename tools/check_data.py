"""Check a data root against the layouts of DATASETS.md: one line per dataset, found or missing.

    python tools/check_data.py --root DATA [--datasets caltech101 imagenet ...] [--decode]

With ``--decode`` every image of a complete dataset's train, val and test splits (as train.py loads
them) is opened and decoded, and each one that cannot be is named; this finds a bad *test* image
before a training run reaches it. Loading a dataset the first time writes what train.py would (a
split file built from raw files, a cache).

Exit code 0 when every requested dataset is complete (and decodes), 1 when something is missing or
bad, 2 for bad arguments.
"""
from __future__ import annotations

import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from any folder

from PIL import Image  # noqa: E402
from tqdm import tqdm  # noqa: E402

import datasets  # noqa: E402,F401  (registers every loader)
from dassl.config import get_cfg_default  # noqa: E402
from dassl.data.datasets import DATASET_REGISTRY  # noqa: E402
from dassl.utils import read_image  # noqa: E402
from datasets.base import BenchmarkDataset  # noqa: E402

# What a broken, truncated or non-image file raises when decoded (as the data pipeline catches them).
DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def laid_out_by_hand() -> dict[str, type[BenchmarkDataset]]:
    """short name -> loader, for the datasets a user downloads and lays out (generated ones left out)."""
    loaders = {}
    for name in DATASET_REGISTRY.registered_names():
        cls = DATASET_REGISTRY.get(name)
        if isinstance(cls, type) and issubclass(cls, BenchmarkDataset) and cls.short_name:
            if cls.where_documented().startswith("see DATASETS.md"):
                loaders[cls.short_name] = cls
    return loaders


def first_missing(cls: type[BenchmarkDataset], root: str) -> tuple[str | None, int]:
    """(first missing path, how many images are missing) for one dataset under ``root``."""
    dataset_dir = osp.join(root, cls.dataset_dir)
    missing = cls.first_missing_layout_path(dataset_dir)
    if missing is not None:
        return missing, 0
    return cls.first_missing_image(dataset_dir)


def split_images(cls: type[BenchmarkDataset], root: str) -> list[str]:
    """Every image path of the dataset's train, val and test splits, as train.py's loader reads them."""
    cfg = get_cfg_default()
    cfg.DATASET.ROOT = root
    dataset = cls(cfg)
    return list(dict.fromkeys(d.impath for split in (dataset.train_x, dataset.val, dataset.test)
                              for d in split or ()))


def undecodable(paths: list[str], name: str) -> list[tuple[str, str]]:
    """(path, error) for each image that cannot be opened and decoded."""
    bad = []
    for path in tqdm(paths, desc=f"decode {name}", unit="img", disable=None):  # no bar in a log file
        try:
            read_image(path)
        except DECODE_ERRORS as error:
            bad.append((path, f"{type(error).__name__}: {error}"))
    return bad


def check_decoding(cls: type[BenchmarkDataset], name: str, root: str, width: int) -> bool:
    """Decode every split image of one complete dataset; print the verdict and each bad image."""
    try:
        paths = split_images(cls, root)
    except (ValueError, OSError) as e:  # a split file the loader refuses
        print(f"{name:<{width}}  invalid  {e}")
        return False
    bad = undecodable(paths, name)
    if not bad:
        print(f"{name:<{width}}  decoded  {len(paths)} images")
        return True
    print(f"{name:<{width}}  bad      {len(bad)} of {len(paths)} images cannot be decoded "
          "(replace them; DATALOADER.SKIP_BAD_IMAGES True skips bad training images only):")
    for path, error in bad:
        print(f"{'':<{width}}           {path}  ({error})")
    return False


def check(root: str, names: list[str], decode: bool = False) -> int:
    """Print one line per dataset; return the number of datasets with something missing (or bad)."""
    loaders = laid_out_by_hand()
    width = max(len(n) for n in names)
    n_missing = 0
    for name in names:
        cls = loaders[name]
        try:
            missing, n_images = first_missing(cls, root)
        except (ValueError, OSError) as e:  # a malformed split or annotation file
            n_missing += 1
            print(f"{name:<{width}}  invalid  {e}")
            continue
        if missing is None:
            print(f"{name:<{width}}  found    {osp.join(root, cls.dataset_dir)}")
            if decode and not check_decoding(cls, name, root, width):
                n_missing += 1
            continue
        n_missing += 1
        more = f" ({n_images} missing in all)" if n_images > 1 else ""
        print(f"{name:<{width}}  missing  {missing}{more}  ({cls.where_documented()})")
    return n_missing


def main(argv: list[str] | None = None) -> int:
    loaders = laid_out_by_hand()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="the data root (DATASET.ROOT / --root of train.py)")
    parser.add_argument("--datasets", nargs="+", default=sorted(loaders), metavar="NAME",
                        help=f"datasets to check (default: all): {' '.join(sorted(loaders))}")
    parser.add_argument("--decode", action="store_true",
                        help="also open and decode every image of the train, val and test splits")
    args = parser.parse_args(argv)
    unknown = [n for n in args.datasets if n not in loaders]
    if unknown:
        parser.error(f"unknown dataset(s) {unknown}; valid: {' '.join(sorted(loaders))}")
    root = osp.abspath(osp.expanduser(args.root))
    return 1 if check(root, args.datasets, args.decode) else 0


if __name__ == "__main__":
    sys.exit(main())
