"""Check a data root against the layouts of DATASETS.md: one line per dataset, found or missing.

    python tools/check_data.py --root DATA [--datasets caltech101 imagenet ...]

Exit code 0 when every requested dataset is complete, 1 when something is missing, 2 for bad arguments.
"""
from __future__ import annotations

import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from any folder

import datasets  # noqa: E402,F401  (registers every loader)
from dassl.data.datasets import DATASET_REGISTRY  # noqa: E402
from datasets.base import BenchmarkDataset  # noqa: E402


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


def check(root: str, names: list[str]) -> int:
    """Print one line per dataset; return the number of datasets with something missing."""
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
    args = parser.parse_args(argv)
    unknown = [n for n in args.datasets if n not in loaders]
    if unknown:
        parser.error(f"unknown dataset(s) {unknown}; valid: {' '.join(sorted(loaders))}")
    root = osp.abspath(osp.expanduser(args.root))
    return 1 if check(root, args.datasets) else 0


if __name__ == "__main__":
    sys.exit(main())
