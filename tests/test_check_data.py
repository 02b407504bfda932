"""tools/check_data.py: the layout check, and --decode naming every image that cannot be decoded."""
from __future__ import annotations

import json
import os.path as osp
from pathlib import Path

from tests.fake_trees import make_fake_trees
from tools import check_data


def split_entry(root: Path, dataset_folder: str, split_file: str, split: str) -> str:
    """The first image path of one split of a CoOp split JSON, relative to the dataset folder."""
    with open(root / dataset_folder / split_file) as handle:
        return json.loads(handle.read())[split][0][0]


def test_decode_names_each_bad_image_of_every_split(tmp_path: Path, capsys) -> None:
    root = tmp_path / "data"
    make_fake_trees(str(root), ["caltech101", "dtd"])
    caltech = root / "caltech-101" / "101_ObjectCategories"
    bad_test = caltech / split_entry(root, "caltech-101", "split_zhou_Caltech101.json", "test")
    bad_test.write_bytes(b"not a jpeg")  # exists, so the layout check passes
    truncated = caltech / split_entry(root, "caltech-101", "split_zhou_Caltech101.json", "train")
    truncated.write_bytes(truncated.read_bytes()[:100])

    assert check_data.main(["--root", str(root), "--datasets", "caltech101", "dtd"]) == 0  # files exist
    capsys.readouterr()

    assert check_data.main(["--root", str(root), "--datasets", "caltech101", "dtd", "--decode"]) == 1
    printed = capsys.readouterr().out
    lines = printed.splitlines()
    verdict = next(line for line in lines if line.startswith("caltech101  bad"))
    assert "2 of " in verdict and "DATALOADER.SKIP_BAD_IMAGES" in verdict
    named = [line.strip().split("  (")[0] for line in lines if osp.sep in line and "found" not in line]
    assert sorted(named) == sorted([str(bad_test), str(truncated)])
    assert any(line.startswith("dtd         decoded") for line in lines)
