"""The 15 benchmark loaders on generated trees: sizes, names, labels, few-shot caches, base/new, errors."""
from __future__ import annotations

import json
import math
import os
import os.path as osp
import pickle
import random
import shutil

import numpy as np
import pytest

import datasets  # noqa: F401  (registers the loaders and DATASET.SUBSAMPLE_CLASSES)
from dassl.config import ConfigError, get_cfg_default
from dassl.data.datasets import DATASET_REGISTRY, DatasetBase, Datum, build_dataset
from datasets.base import BenchmarkDataset
from tests.fake_trees import FAKE_DATASETS, PER_CLASS, make_fake_trees, write_jpeg
from tools import check_data

ALL = sorted(FAKE_DATASETS)
TARGETS = ["ImageNetA", "ImageNetR", "ImageNetSketch", "ImageNetV2"]
FEWSHOT = [n for n in ALL if n not in TARGETS]
JSON_SPLIT = [n for n in FEWSHOT if DATASET_REGISTRY.get(n).split_file]


def make_cfg(root: str, name: str, shots: int = -1, subsample: str = "all", seed: int = 1):
    cfg = get_cfg_default()
    cfg.DATASET.ROOT = root
    cfg.DATASET.NAME = name
    cfg.DATASET.NUM_SHOTS = shots
    cfg.DATASET.SUBSAMPLE_CLASSES = subsample
    cfg.SEED = seed
    cfg.VERBOSE = False
    return cfg


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> str:
    """A private fake tree (few-shot caches written here must not leak into other test modules)."""
    root = str(tmp_path_factory.mktemp("datasets"))
    make_fake_trees(root)
    return root


@pytest.fixture
def one_tree(tmp_path):
    """A fresh tree holding only the named dataset, for tests that damage it."""

    def make(name: str) -> tuple[str, type[BenchmarkDataset]]:
        make_fake_trees(str(tmp_path), [name])
        return str(tmp_path), DATASET_REGISTRY.get(name)

    return make


def test_every_benchmark_is_registered_with_a_config():
    for name, fake in FAKE_DATASETS.items():
        assert name in DATASET_REGISTRY
        with open(osp.join("configs", "datasets", f"{fake.short_name}.yaml")) as f:
            assert f'NAME: "{name}"' in f.read()


@pytest.mark.parametrize("name", ALL)
def test_sizes_names_and_contiguous_labels(tree, name):
    ds = build_dataset(make_cfg(tree, name))
    fake = FAKE_DATASETS[name]
    assert (len(ds.train_x), len(ds.test)) == (fake.num_train, fake.num_test)
    assert (ds.val is None) if fake.num_val is None else (len(ds.val) == fake.num_val)
    assert ds.classnames == fake.classnames
    assert ds.num_classes == len(fake.classnames)
    assert {d.label for d in ds.train_x} == set(range(ds.num_classes))
    assert {d.label for d in ds.test} == set(range(ds.num_classes))
    assert all(osp.isfile(d.impath) and d.impath.startswith(tree) for d in ds.test)


@pytest.mark.parametrize("name", FEWSHOT)
def test_fewshot_draw_is_seeded_cached_and_reused(tree, name):
    shots = 2
    random.seed(1)
    first = build_dataset(make_cfg(tree, name, shots=shots, seed=1))
    cache = osp.join(first.split_fewshot_dir, "shot_2-seed_1.pkl")
    assert osp.isfile(cache)
    n = len(FAKE_DATASETS[name].classnames)
    assert len(first.train_x) == shots * n
    assert sorted(d.label for d in first.train_x) == sorted(list(range(n)) * shots)
    if name == "ImageNet":  # val is the full test set, and the cache holds only "train"
        assert len(first.val) == len(first.test)
        with open(cache, "rb") as f:
            assert set(pickle.load(f)) == {"train", "split_fingerprint"}
    else:
        assert len(first.val) == min(shots, 4) * n

    random.seed(12345)  # a different state: the items must come from the cache, not a new draw
    again = build_dataset(make_cfg(tree, name, shots=shots, seed=1))
    assert [d.impath for d in again.train_x] == [d.impath for d in first.train_x]

    os.remove(cache)
    random.seed(1)
    redrawn = build_dataset(make_cfg(tree, name, shots=shots, seed=1))
    assert [d.impath for d in redrawn.train_x] == [d.impath for d in first.train_x]
    assert [d.impath for d in redrawn.val] == [d.impath for d in first.val]


@pytest.mark.parametrize("name", FEWSHOT)
def test_base_and_new_halves_are_relabelled_from_zero(tree, name):
    names = FAKE_DATASETS[name].classnames
    m = math.ceil(len(names) / 2)
    base = build_dataset(make_cfg(tree, name, subsample="base"))
    new = build_dataset(make_cfg(tree, name, subsample="new"))
    assert base.classnames == names[:m] and new.classnames == names[m:]
    for ds in (base, new):
        for items in (ds.train_x, ds.val, ds.test):
            assert {d.label for d in items} == set(range(ds.num_classes))
            assert all(d.classname == ds.lab2cname[d.label] for d in items)
    assert len(base.test) + len(new.test) == FAKE_DATASETS[name].num_test


@pytest.mark.parametrize("name", TARGETS)
def test_targets_ignore_shots_and_subsampling(tree, name):
    ds = build_dataset(make_cfg(tree, name, shots=1, subsample="base"))
    assert len(ds.test) == FAKE_DATASETS[name].num_test
    assert ds.classnames == FAKE_DATASETS[name].classnames
    assert not osp.exists(osp.join(ds.dataset_dir, "split_fewshot"))


def test_generate_fewshot_dataset_matches_upstream_draw_order():
    items = [Datum.from_verified(f"/x/{i}.jpg", label=y) for i, y in enumerate([3, 1, 3, 0, 1, 3, 0, 1, 3])]
    random.seed(7)
    drawn = DatasetBase().generate_fewshot_dataset(items, num_shots=2)
    random.seed(7)
    by_label = {3: [], 1: [], 0: []}  # first-appearance order, as upstream's defaultdict grouping
    for d in items:
        by_label[d.label].append(d)
    expected = [d for group in by_label.values() for d in random.sample(group, 2)]
    assert drawn == expected
    assert DatasetBase().generate_fewshot_dataset(items, num_shots=-1) is items


def test_subsample_counts_and_relabelling():
    items = [Datum.from_verified(f"/x/{y}.jpg", label=y, classname=f"c{y}") for y in range(37)]
    base, = BenchmarkDataset.subsample_classes(items, subsample="base")
    new, = BenchmarkDataset.subsample_classes(items, subsample="new")
    assert (len(base), len(new)) == (19, 18)
    assert [d.label for d in new] == list(range(18)) and new[0].classname == "c19"
    with pytest.raises(ConfigError, match=r"DATASET.SUBSAMPLE_CLASSES.*'all', 'base', 'new'"):
        BenchmarkDataset.subsample_classes(items, subsample="novel")


def test_datum_checks_its_file_and_pickles_like_upstream(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jpg"), pytest.warns(UserWarning, match="No file found"):
        Datum(impath=str(tmp_path / "nope.jpg"))
    path = tmp_path / "a.jpg"
    write_jpeg(str(path), (1, 2, 3), np.random.default_rng(0))
    d = Datum(impath=str(path), label=4, classname="cat")
    with pytest.raises(AttributeError):
        d.label = 5
    # Upstream's caches store the class path and exactly these four attributes.
    blob = pickle.dumps(d, protocol=pickle.HIGHEST_PROTOCOL)
    assert b"dassl.data.datasets.base_dataset" in blob and b"Datum" in blob
    assert vars(pickle.loads(blob)) == {"_impath": str(path), "_label": 4, "_domain": 0, "_classname": "cat"}


def test_dataset_base_rejects_a_label_gap():
    items = [Datum.from_verified("/x/a.jpg", label=0), Datum.from_verified("/x/b.jpg", label=2)]
    with pytest.raises(ValueError, match=r"contiguous.*\[1\]"):
        DatasetBase(train_x=items)


# ---------------------------------------------------------------- building splits from raw files


def test_folder_split_is_built_saved_and_reread(one_tree):
    root, cls = one_tree("Caltech101")
    os.remove(osp.join(root, cls.dataset_dir, cls.split_file))
    write_jpeg(osp.join(root, "caltech-101", "101_ObjectCategories", "BACKGROUND_Google", "x.jpg"),
               (0, 0, 0), np.random.default_rng(0))
    random.seed(3)
    built = build_dataset(make_cfg(root, "Caltech101"))
    per_class = sum(PER_CLASS.values())
    n = len(FAKE_DATASETS["Caltech101"].classnames)
    assert (len(built.train_x), len(built.val), len(built.test)) == (
        n * round(per_class * 0.5), n * round(per_class * 0.2), n * (per_class - 4 - 2))
    assert built.classnames == FAKE_DATASETS["Caltech101"].classnames  # renamed, background dropped
    reread = build_dataset(make_cfg(root, "Caltech101"))
    assert [(d.impath, d.label) for d in reread.test] == [(d.impath, d.label) for d in built.test]


def test_pets_split_is_built_from_annotations(one_tree):
    root, cls = one_tree("OxfordPets")
    base = osp.join(root, cls.dataset_dir)
    split = json.load(open(osp.join(base, cls.split_file)))
    os.remove(osp.join(base, cls.split_file))
    os.makedirs(osp.join(base, "annotations"))
    for filename, parts in (("trainval.txt", ("train", "val")), ("test.txt", ("test",))):
        with open(osp.join(base, "annotations", filename), "w") as f:
            for part in parts:
                for rel, label, _ in split[part]:
                    f.write(f"{rel[:-4]} {label + 1} 1 1\n")
    ds = build_dataset(make_cfg(root, "OxfordPets"))
    assert ds.classnames == FAKE_DATASETS["OxfordPets"].classnames
    assert (len(ds.train_x), len(ds.val), len(ds.test)) == (25, 5, 10)  # 6 trainval per class: round(1.2) val
    assert osp.isfile(osp.join(base, cls.split_file))


def test_flowers_split_is_built_from_mat_file(one_tree):
    from scipy.io import savemat

    root, cls = one_tree("OxfordFlowers")
    base = osp.join(root, cls.dataset_dir)
    split = json.load(open(osp.join(base, cls.split_file)))
    os.remove(osp.join(base, cls.split_file))
    entries = sorted(e for part in split.values() for e in part)  # image_00001.jpg ... in order
    savemat(osp.join(base, "imagelabels.mat"), {"labels": np.array([[e[1] + 1 for e in entries]])})
    with open(osp.join(base, "cat_to_name.json"), "w") as f:
        json.dump({str(e[1] + 1): e[2] for e in entries}, f)
    ds = build_dataset(make_cfg(root, "OxfordFlowers"))
    assert ds.classnames == FAKE_DATASETS["OxfordFlowers"].classnames
    assert (len(ds.train_x), len(ds.val), len(ds.test)) == (20, 10, 10)


# ---------------------------------------------------------------- bad input


def test_missing_data_folder_names_dataset_path_and_docs(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        build_dataset(make_cfg(str(tmp_path), "Caltech101"))
    message = str(err.value)
    assert "Caltech101" in message and str(tmp_path / "caltech-101") in message
    assert "DATASETS.md#caltech101" in message and "\n" not in message
    assert not osp.exists(tmp_path / "caltech-101")  # no empty folder left behind


@pytest.mark.parametrize("name", JSON_SPLIT)
def test_missing_split_file_or_image_is_named(one_tree, name):
    root, cls = one_tree(name)
    split_path = osp.join(root, cls.dataset_dir, cls.split_file)
    rel = json.load(open(split_path))["test"][-1][0]
    image = osp.normpath(osp.join(root, cls.dataset_dir, cls.image_dir, rel))
    os.remove(image)
    with pytest.raises(FileNotFoundError, match=f"{cls.__name__}: missing image .*{osp.basename(image)}.*DATASETS.md#{cls.short_name}"):
        build_dataset(make_cfg(root, name))
    if cls.raw_split_paths != ():  # folder-split datasets rebuild a missing JSON instead
        os.remove(split_path)
        with pytest.raises(FileNotFoundError, match=f"split file {split_path} \\(or, to rebuild it, .*\\); see DATASETS.md#{cls.short_name}"):
            build_dataset(make_cfg(root, name))


def _edit_split(root: str, cls, edit) -> str:
    path = osp.join(root, cls.dataset_dir, cls.split_file)
    split = json.load(open(path))
    edit(split)
    with open(path, "w") as f:
        json.dump(split, f)
    return path


@pytest.mark.parametrize(
    "edit, pattern",
    [
        (lambda s: s["test"].__setitem__(0, [s["test"][0][0], 9, "x"]), r"entry test\[0\].*label 9, outside the class range 0..4"),
        (lambda s: s.__setitem__("train", [e for e in s["train"] if e[1] != 2]), r"class 2 has no training image"),
        (lambda s: s["val"].__setitem__(1, ["../../etc/passwd", 0, "face"]), r'entry val\[1\] \["../../etc/passwd".*outside the dataset folder'),
        (lambda s: s["train"].__setitem__(3, ["a.jpg", "0", "face"]), r"entry train\[3\].*not \[relative_path, integer_label, classname\]"),
        (lambda s: s.pop("val"), r'lists "train", "val" and "test"'),
    ],
    ids=["label-out-of-range", "empty-class", "escaping-path", "string-label", "missing-part"],
)
def test_bad_split_entries_name_file_and_entry(one_tree, edit, pattern):
    root, cls = one_tree("Caltech101")
    path = _edit_split(root, cls, edit)
    with pytest.raises(ValueError, match=pattern) as err:
        build_dataset(make_cfg(root, "Caltech101"))
    assert path in str(err.value)


def test_invalid_json_names_the_file(one_tree):
    root, cls = one_tree("DescribableTextures")
    path = osp.join(root, cls.dataset_dir, cls.split_file)
    with open(path, "w") as f:
        f.write('{"train": [')
    with pytest.raises(ValueError, match=f"split file {path}: not valid JSON"):
        build_dataset(make_cfg(root, "DescribableTextures"))


def test_fewshot_cache_from_another_root_is_drawn_again_identically(one_tree, tmp_path_factory, caplog):
    root, cls = one_tree("EuroSAT")
    random.seed(1)
    first = build_dataset(make_cfg(root, "EuroSAT", shots=1))
    moved = str(tmp_path_factory.mktemp("moved"))
    shutil.copytree(osp.join(root, cls.dataset_dir), osp.join(moved, cls.dataset_dir))
    shutil.rmtree(osp.join(root, cls.dataset_dir))
    random.seed(1)
    with caplog.at_level("WARNING", logger="datasets.base"):
        again = build_dataset(make_cfg(moved, "EuroSAT", shots=1))
    assert any("shot_1-seed_1.pkl lists" in m and "another DATASET.ROOT" in m and "drawing it again" in m
               for m in caplog.messages)
    assert [osp.relpath(d.impath, moved) for d in again.train_x] == [osp.relpath(d.impath, root) for d in first.train_x]
    assert again.content_fingerprint == first.content_fingerprint  # relative paths: the root is not content


def test_imagenet_flat_val_and_stale_cache_are_explained(one_tree):
    root, cls = one_tree("ImageNet")
    val = osp.join(root, "imagenet", "images", "val")
    for wnid in os.listdir(val):  # flatten val, as the raw ILSVRC download ships it
        for name in os.listdir(osp.join(val, wnid)):
            os.rename(osp.join(val, wnid, name), osp.join(val, name))
        os.rmdir(osp.join(val, wnid))
    with pytest.raises(ValueError, match=r"images/val: no class folders \(12 loose files\)"):
        build_dataset(make_cfg(root, "ImageNet"))

    shutil.rmtree(val)
    shutil.copytree(osp.join(root, "imagenet", "images", "train"), val)
    build_dataset(make_cfg(root, "ImageNet"))  # writes preprocessed.pkl
    shutil.rmtree(osp.join(root, "imagenet", "images", "train", "n01496331"))
    with pytest.raises(ValueError, match=r"preprocessed.pkl: holds 6 classes but .* has 5 class folders"):
        build_dataset(make_cfg(root, "ImageNet"))


def test_unknown_dataset_name_suggests_the_closest():
    with pytest.raises(ValueError, match='did you mean "Caltech101"'):
        build_dataset(make_cfg("/nonexistent", "Caltech100"))


# ---------------------------------------------------------------- tools/check_data.py


def test_check_data_reports_found_and_first_missing(one_tree, tmp_path, capsys):
    root, _ = one_tree("Caltech101")
    make_fake_trees(root, ["imagenet_a"])
    assert check_data.main(["--root", root, "--datasets", "caltech101", "imagenet_a"]) == 0
    assert capsys.readouterr().out.count(" found ") == 2

    image = osp.join(root, "caltech-101", "101_ObjectCategories", "accordion", "image_0011.jpg")
    os.remove(image)
    assert check_data.main(["--root", root, "--datasets", "caltech101", "imagenet_a", "dtd"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["caltech101", "missing", image]
    assert lines[1].split()[:3] == ["imagenet_a", "found", osp.join(root, "imagenet-adversarial")]
    assert lines[2].split()[:3] == ["dtd", "missing", osp.join(root, "dtd")] and "DATASETS.md#dtd" in lines[2]


def test_cars_split_is_built_from_devkit_mat_files(one_tree):
    from scipy.io import savemat

    root, cls = one_tree("StanfordCars")
    base = osp.join(root, cls.dataset_dir)
    split = json.load(open(osp.join(base, cls.split_file)))
    os.remove(osp.join(base, cls.split_file))
    names = FAKE_DATASETS["StanfordCars"].classnames  # "<year> <make model>" in the split file

    def annotations(entries):
        table = np.zeros((1, len(entries)), dtype=[("fname", object), ("class", object)])
        for i, (rel, label, _) in enumerate(entries):
            table[0, i] = (osp.basename(rel), np.array([[label + 1]]))
        return {"annotations": table}

    os.makedirs(osp.join(base, "devkit"))
    savemat(osp.join(base, "devkit", "cars_train_annos.mat"), annotations(split["train"] + split["val"]))
    savemat(osp.join(base, "cars_test_annos_withlabels.mat"), annotations(split["test"]))
    meta = np.empty((1, len(names)), dtype=object)
    for i, name in enumerate(names):  # the devkit puts the year last
        year, _, rest = name.partition(" ")
        meta[0, i] = np.array([f"{rest} {year}"])
    savemat(osp.join(base, "devkit", "cars_meta.mat"), {"class_names": meta})
    ds = build_dataset(make_cfg(root, "StanfordCars"))
    assert ds.classnames == names
    assert (len(ds.train_x), len(ds.val), len(ds.test)) == (25, 5, 10)
