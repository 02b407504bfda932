"""Data that would give a plausible, wrong number: stale few-shot caches, phantom classes, too few shots,
one-class datasets and high-bit-depth images. Each is drawn again correctly or refused in one line."""
from __future__ import annotations

import json
import logging
import os.path as osp
import pickle
import random

import numpy as np
import pytest
from PIL import Image

import datasets  # noqa: F401  (registers the loaders and DATASET.SUBSAMPLE_CLASSES)
from dassl.data.datasets import DatasetBase, Datum, build_dataset
from dassl.utils import DataError, read_image
from tests.fake_trees import make_fake_trees
from tests.test_datasets import make_cfg
from tests.test_engine import train_argv
from tests.test_first_contact import run_cli
from tools import check_data

SPLIT = ("caltech-101", "split_zhou_Caltech101.json")
IMAGES = "101_ObjectCategories"


@pytest.fixture
def caltech(tmp_path) -> str:
    """A fresh fake Caltech101 (5 classes; 4 train, 2 val, 2 test images each); returns the data root."""
    make_fake_trees(str(tmp_path / "data"), ["Caltech101"])
    return str(tmp_path / "data")


def split_path(root: str) -> str:
    return osp.join(root, *SPLIT)


def read_split(root: str) -> dict:
    with open(split_path(root)) as f:
        return json.load(f)


def write_split(root: str, split: dict) -> None:
    with open(split_path(root), "w") as f:
        json.dump(split, f)


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# ---------------------------------------------------------------- the few-shot cache follows the split


def test_a_cache_drawn_from_another_split_is_drawn_again_not_leaked(caltech, tmp_path):
    first = build_dataset(make_cfg(caltech, "Caltech101", shots=2))
    cache = osp.join(first.split_fewshot_dir, "shot_2-seed_1.pkl")
    # The user's new split file: the old training images are now the test set.
    old = read_split(caltech)
    write_split(caltech, {"train": old["test"], "val": old["val"], "test": old["train"]})

    out = str(tmp_path / "run")
    assert run_cli(train_argv(caltech, out, max_epoch=1, extra=["DATASET.NAME", "Caltech101",
                                                                 "DATASET.NUM_SHOTS", "2"])) == 0
    log = open(osp.join(out, "log.txt")).read()
    assert f"Few-shot cache {cache} was drawn from another version of the split" in log
    assert "drawing it again from the current split" in log

    again = build_dataset(make_cfg(caltech, "Caltech101", shots=2))
    test_images = {d.impath for d in again.test}
    assert len(again.train_x) == 10 and not test_images & {d.impath for d in again.train_x}
    assert again.content_fingerprint["split"] != first.content_fingerprint["split"]
    with open(cache, "rb") as f:
        assert pickle.load(f)["split_fingerprint"] == again.content_fingerprint["split"]


def test_an_upstream_cache_is_used_only_when_it_matches_the_split(caltech, caplog):
    """Upstream's caches carry no fingerprint: every entry must be a train (val) entry of the split as it is."""
    full = build_dataset(make_cfg(caltech, "Caltech101"))
    last_two = [d for label in range(5) for d in [x for x in full.train_x if x.label == label][-2:]]
    cache = osp.join(full.split_fewshot_dir, "shot_2-seed_1.pkl")
    with open(cache, "wb") as f:
        pickle.dump({"train": last_two, "val": full.val[:10]}, f)
    random.seed(99)  # whatever the state, the items come from the cache
    reused = build_dataset(make_cfg(caltech, "Caltech101", shots=2))
    assert [d.impath for d in reused.train_x] == [d.impath for d in last_two]

    leaked = [*last_two[:-1], full.test[-1]]  # one test image among the training shots
    with open(cache, "wb") as f:
        pickle.dump({"train": leaked, "val": full.val[:10]}, f)
    with caplog.at_level(logging.WARNING, logger="datasets.base"):
        redrawn = build_dataset(make_cfg(caltech, "Caltech101", shots=2))
    assert f"lists {full.test[-1].impath}" in caplog.text and "which is not a train entry" in caplog.text
    assert full.test[-1].impath not in {d.impath for d in redrawn.train_x}


def test_content_fingerprint_names_the_split_and_what_the_run_uses(caltech):
    full = build_dataset(make_cfg(caltech, "Caltech101")).content_fingerprint
    shots = build_dataset(make_cfg(caltech, "Caltech101", shots=2)).content_fingerprint
    base = build_dataset(make_cfg(caltech, "Caltech101", subsample="base")).content_fingerprint
    assert set(full) == {"split", "train_x", "val", "test"} and all(len(v) == 64 for v in full.values())
    assert full["split"] == shots["split"] == base["split"]  # the split read, before few-shot and subsampling
    assert shots["train_x"] != full["train_x"] and shots["test"] == full["test"]
    assert base["test"] != full["test"]
    split = read_split(caltech)
    split["test"][0][0], split["test"][1][0] = split["test"][1][0], split["test"][0][0]  # two files swap labels
    write_split(caltech, split)
    swapped = build_dataset(make_cfg(caltech, "Caltech101")).content_fingerprint
    assert swapped["split"] != full["split"] and swapped["test"] != full["test"]
    assert swapped["train_x"] == full["train_x"]


# ---------------------------------------------------------------- split files: one label per class name


def test_a_train_label_equal_to_the_class_count_is_refused(caltech, tmp_path, capsys):
    split = read_split(caltech)
    rel, label, name = next(e for e in split["train"] if e[1] == 2)
    split["train"].append([rel, 5, name])  # a 6th label in a 5-class split, under class 2's name
    write_split(caltech, split)
    with pytest.raises(DataError, match=rf'entry train\[20\] .* gives class "{name}" label 5, earlier label 2'):
        build_dataset(make_cfg(caltech, "Caltech101"))
    argv = train_argv(caltech, str(tmp_path / "run"), max_epoch=1, extra=["DATASET.NAME", "Caltech101"])
    assert run_cli(argv) == 1
    line = one_error_line(capsys)
    assert split_path(caltech) in line and "label 5" in line and "one label and one name" in line


def test_a_class_with_training_images_but_no_test_image_is_refused(caltech):
    split = read_split(caltech)
    rel = split["train"][0][0]
    split["train"].append([rel, 5, "phantom"])
    write_split(caltech, split)
    with pytest.raises(DataError, match=r'class 5 "phantom" \(first at entry train\[20\] .*\) has no test image; '
                                         r"every class of 0..5 needs one"):
        build_dataset(make_cfg(caltech, "Caltech101"))


# ---------------------------------------------------------------- shots and classes


def test_more_shots_than_a_class_holds_is_refused_in_one_line(caltech, tmp_path, capsys):
    with pytest.raises(DataError, match=r"DATASET.NUM_SHOTS 16, but 5 of 5 classes have fewer training images "
                                         r".*with 4\); valid: DATASET.NUM_SHOTS 1..4, or -1 for every image"):
        build_dataset(make_cfg(caltech, "Caltech101", shots=16))
    split = read_split(caltech)
    split["train"] = [e for i, e in enumerate(split["train"]) if not (e[1] == 3 and i % 4 == 0)]  # class 3: 3 images
    write_split(caltech, split)
    assert len(build_dataset(make_cfg(caltech, "Caltech101", shots=3)).train_x) == 15
    argv = train_argv(caltech, str(tmp_path / "run"), max_epoch=1,
                      extra=["DATASET.NAME", "Caltech101", "DATASET.NUM_SHOTS", "4"])
    assert run_cli(argv) == 1
    line = one_error_line(capsys)
    assert "DATASET.NUM_SHOTS 4, but 1 of 5 classes" in line and "valid: DATASET.NUM_SHOTS 1..3" in line
    assert not osp.exists(osp.join(caltech, "caltech-101", "split_fewshot", "shot_4-seed_1.pkl"))


def test_one_class_left_is_refused(caltech, tmp_path, capsys):
    split = read_split(caltech)
    write_split(caltech, {part: [e for e in entries if e[1] < 2] for part, entries in split.items()})
    assert build_dataset(make_cfg(caltech, "Caltech101")).num_classes == 2
    with pytest.raises(DataError, match=r'SUBSAMPLE_CLASSES "base" leaves 1 of its 2 classes \(\'face\'\)'):
        build_dataset(make_cfg(caltech, "Caltech101", subsample="base"))
    argv = train_argv(caltech, str(tmp_path / "run"), max_epoch=1,
                      extra=["DATASET.NAME", "Caltech101", "DATASET.SUBSAMPLE_CLASSES", "new"])
    assert run_cli(argv) == 1
    line = one_error_line(capsys)
    assert 'DATASET.SUBSAMPLE_CLASSES "new" leaves 1 of its 2 classes' in line and 'valid here: "all"' in line
    write_split(caltech, {part: [e for e in entries if e[1] < 1] for part, entries in split.items()})
    with pytest.raises(DataError, match=r"holds one class \('face'\); a classification run needs at least 2"):
        build_dataset(make_cfg(caltech, "Caltech101"))


def test_a_fork_datasets_short_few_shot_draw_is_said_once(caplog):
    """Fork dataset files call generate_fewshot_dataset themselves; a class with fewer images is said, once."""
    items = [Datum.from_verified(f"/x/{y}-{i}.jpg", label=y) for y, n in enumerate([5, 2, 3]) for i in range(n)]
    with caplog.at_level(logging.WARNING, logger="dassl"):
        drawn = DatasetBase().generate_fewshot_dataset(items, num_shots=4)
    assert len(drawn) == 4 + 2 + 3
    warnings = [m for m in caplog.messages if "Few-shot draw" in m]
    assert warnings == ["WARNING: Few-shot draw of 4 per class: 2 of 3 classes have fewer items (fewest: 2), "
                        "and all of theirs are taken"]


def test_a_fork_dataset_with_one_class_is_refused():
    items = [Datum.from_verified(f"/x/{i}.jpg", label=0, classname="cat") for i in range(3)]
    with pytest.raises(DataError, match=r"one class \('cat'\); a classification run needs at least 2 classes"):
        DatasetBase(train_x=items, test=items)


# ---------------------------------------------------------------- 16-bit, 32-bit and float images


def greyscale_levels() -> np.ndarray:
    """8x8 target 8-bit levels covering black to white."""
    return np.linspace(0, 255, 64).round().astype(np.uint8).reshape(8, 8)


def test_high_bit_depth_greyscale_images_are_scaled_to_8_bits(tmp_path):
    levels = greyscale_levels()
    sixteen = tmp_path / "grey16.png"
    Image.fromarray(levels.astype(np.uint16) * 257).save(sixteen)  # 255 -> 65535
    assert Image.open(sixteen).mode == "I;16"
    int32 = tmp_path / "grey32.tif"
    Image.fromarray(levels.astype(np.int32) * 257).save(int32)
    assert Image.open(int32).mode == "I"
    floats = tmp_path / "float.tif"
    Image.fromarray(levels.astype(np.float32) / 255).save(floats)
    assert Image.open(floats).mode == "F"
    for path in (sixteen, int32, floats):
        decoded = read_image(str(path))
        assert decoded.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(decoded), np.repeat(levels[:, :, None], 3, axis=2))

    out_of_range = tmp_path / "radiance.tif"
    Image.fromarray(levels.astype(np.float32)).save(out_of_range)  # 0..255 floats: no known scale
    with pytest.raises(DataError, match=rf'"{out_of_range}": F-mode greyscale image with values 0.0..255.0, '
                                         r"outside 0..1.*save it as 8- or 16-bit PNG"):
        read_image(str(out_of_range))


def test_check_data_decode_accepts_16_bit_images_and_names_unscalable_ones(caltech, capsys):
    split = read_split(caltech)
    image_dir = osp.join(caltech, "caltech-101", IMAGES)
    sixteen = osp.join(image_dir, split["test"][0][0])
    Image.fromarray(greyscale_levels().astype(np.uint16) * 257).save(sixteen, format="PNG")
    assert check_data.main(["--root", caltech, "--datasets", "caltech101", "--decode"]) == 0
    assert "caltech101  decoded  40 images" in capsys.readouterr().out
    np.testing.assert_array_equal(np.asarray(read_image(sixteen))[:, :, 0], greyscale_levels())

    floats = osp.join(image_dir, split["train"][0][0])
    Image.fromarray(np.full((8, 8), 2.0, dtype=np.float32)).save(floats, format="TIFF")
    assert check_data.main(["--root", caltech, "--datasets", "caltech101", "--decode"]) == 1
    out = capsys.readouterr().out
    assert "1 of 40 images cannot be decoded" in out and f"{floats}  (DataError: " in out and "outside 0..1" in out
