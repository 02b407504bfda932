"""Tiny fake copies of every benchmark's folder layout (a few 16x16 JPEGs per class, split files).

``make_fake_trees(root)`` writes them; ``FAKE_DATASETS`` says what each loader should find there,
so tests can compare sizes and class names without repeating the layout.
"""
from __future__ import annotations

import json
import os
import os.path as osp
from dataclasses import dataclass

import numpy as np
from PIL import Image

__all__ = ["make_fake_trees", "FAKE_DATASETS", "FakeDataset", "IMAGENET_CLASSES", "write_jpeg"]

PER_CLASS = {"train": 4, "val": 2, "test": 2}  # images per class in each split of a split file
TARGET_PER_CLASS = 2  # images per class in the ImageNet variants

# (wnid, name) in sorted-wnid order, as CoOp's classnames.txt.
IMAGENET_CLASSES = [
    ("n01440764", "tench"),
    ("n01443537", "goldfish"),
    ("n01484850", "great white shark"),
    ("n01491361", "tiger shark"),
    ("n01494475", "hammerhead shark"),
    ("n01496331", "electric ray"),
]
IMAGENET_A_INDICES = [1, 2, 4, 5]  # a subset, looked up by wnid, as the 200-class ImageNet-A
IMAGENET_R_INDICES = [0, 1, 3, 4, 5]


@dataclass(frozen=True)
class FakeDataset:
    """What a loader should read from the fake tree (full data: no few-shot, all classes)."""

    short_name: str
    classnames: list[str]  # in label order
    num_train: int
    num_val: int | None  # None: the dataset has no val set
    num_test: int


def write_jpeg(path: str, colour: tuple[int, int, int], rng: np.random.Generator) -> None:
    """A 16x16 JPEG of one colour plus noise (so two files of a class differ)."""
    os.makedirs(osp.dirname(path), exist_ok=True)
    pixels = np.clip(np.array(colour, dtype=np.int16) + rng.integers(-20, 21, (16, 16, 3)), 0, 255)
    Image.fromarray(pixels.astype(np.uint8)).save(path, quality=90)


def _colour(label: int) -> tuple[int, int, int]:
    return ((53 * label + 40) % 256, (97 * label + 120) % 256, (151 * label + 200) % 256)


# ---------------------------------------------------------------- datasets described by a split JSON

# name -> (dataset folder, image folder, split file, [(class key, class name)], relative path pattern)
# The pattern gets {key}, {split}, {i} (index within class and split) and {n} (running number).
_JSON_DATASETS = {
    "Caltech101": (
        "caltech-101", "101_ObjectCategories", "split_zhou_Caltech101.json",
        [("Faces", "face"), ("Leopards", "leopard"), ("accordion", "accordion"),
         ("airplanes", "airplane"), ("anchor", "anchor")],
        "{key}/image_{n:04d}.jpg",
    ),
    "OxfordPets": (
        "oxford_pets", "images", "split_zhou_OxfordPets.json",
        [("Abyssinian", "abyssinian"), ("american_bulldog", "american_bulldog"), ("Bengal", "bengal"),
         ("beagle", "beagle"), ("Bombay", "bombay")],
        "{key}_{n}.jpg",
    ),
    "StanfordCars": (
        "stanford_cars", "", "split_zhou_StanfordCars.json",
        [("c0", "2012 Acura RL Sedan"), ("c1", "2007 BMW X5 SUV"), ("c2", "2012 Audi R8 Coupe"),
         ("c3", "1993 Geo Metro Convertible"), ("c4", "2012 Tesla Model S Sedan")],
        "cars_{split_or_train}/{n:05d}.jpg",
    ),
    "OxfordFlowers": (
        "oxford_flowers", "jpg", "split_zhou_OxfordFlowers.json",
        [("1", "pink primrose"), ("2", "hard-leaved pocket orchid"), ("3", "canterbury bells"),
         ("4", "sweet pea"), ("5", "english marigold")],
        "image_{n:05d}.jpg",
    ),
    "Food101": (
        "food-101", "images", "split_zhou_Food101.json",
        [("apple_pie", "apple_pie"), ("baby_back_ribs", "baby_back_ribs"), ("baklava", "baklava"),
         ("beef_carpaccio", "beef_carpaccio"), ("beef_tartare", "beef_tartare")],
        "{key}/{n}.jpg",
    ),
    "SUN397": (
        "sun397", "SUN397", "split_zhou_SUN397.json",
        [("a/abbey", "abbey"), ("a/airport_terminal", "airport_terminal"), ("b/bakery/shop", "shop bakery"),
         ("b/bamboo_forest", "bamboo_forest"), ("c/campus", "campus")],
        "{key}/sun_{n:06d}.jpg",
    ),
    "DescribableTextures": (
        "dtd", "images", "split_zhou_DescribableTextures.json",
        [("banded", "banded"), ("blotchy", "blotchy"), ("braided", "braided"), ("bubbly", "bubbly"),
         ("bumpy", "bumpy")],
        "{key}/{key}_{n:04d}.jpg",
    ),
    "EuroSAT": (
        "eurosat", "2750", "split_zhou_EuroSAT.json",
        [("AnnualCrop", "Annual Crop Land"), ("Forest", "Forest"), ("Highway", "Highway or Road"),
         ("River", "River"), ("SeaLake", "Sea or Lake")],
        "{key}/{key}_{n}.jpg",
    ),
    "UCF101": (
        "ucf101", "UCF-101-midframes", "split_zhou_UCF101.json",
        [("Apply_Eye_Makeup", "Apply_Eye_Makeup"), ("Archery", "Archery"), ("Baby_Crawling", "Baby_Crawling"),
         ("Band_Marching", "Band_Marching"), ("Basketball", "Basketball")],
        "{key}/v_{key}_g{n:02d}_c01.jpg",
    ),
}

_SHORT_NAMES = {
    "ImageNet": "imagenet", "Caltech101": "caltech101", "OxfordPets": "oxford_pets",
    "StanfordCars": "stanford_cars", "OxfordFlowers": "oxford_flowers", "Food101": "food101",
    "FGVCAircraft": "fgvc_aircraft", "SUN397": "sun397", "DescribableTextures": "dtd",
    "EuroSAT": "eurosat", "UCF101": "ucf101", "ImageNetV2": "imagenetv2",
    "ImageNetSketch": "imagenet_sketch", "ImageNetA": "imagenet_a", "ImageNetR": "imagenet_r",
}


def _write_json_dataset(root: str, name: str, rng: np.random.Generator) -> None:
    dataset_dir, image_dir, split_file, classes, pattern = _JSON_DATASETS[name]
    split = {}
    n = 1
    for split_name, count in PER_CLASS.items():
        entries = []
        for label, (key, classname) in enumerate(classes):
            for i in range(count):
                rel = pattern.format(key=key, split=split_name, i=i, n=n,
                                     split_or_train="test" if split_name == "test" else "train")
                n += 1
                write_jpeg(osp.join(root, dataset_dir, image_dir, rel), _colour(label), rng)
                entries.append([rel, label, classname])
        split[split_name] = entries
    with open(osp.join(root, dataset_dir, split_file), "w") as f:
        json.dump(split, f, indent=4)


# ---------------------------------------------------------------- FGVC-Aircraft (txt files)

_AIRCRAFT = ["707-320", "A300B4", "Boeing 717", "F/A-18", "Tu-154"]


def _write_fgvc_aircraft(root: str, rng: np.random.Generator) -> None:
    base = osp.join(root, "fgvc_aircraft")
    os.makedirs(osp.join(base, "images"), exist_ok=True)
    with open(osp.join(base, "variants.txt"), "w") as f:
        f.write("".join(f"{v}\n" for v in _AIRCRAFT))
    image_id = 1000001
    for split_name, count in PER_CLASS.items():
        lines = []
        for label, variant in enumerate(_AIRCRAFT):
            for _ in range(count):
                write_jpeg(osp.join(base, "images", f"{image_id}.jpg"), _colour(label), rng)
                lines.append(f"{image_id} {variant}\n")
                image_id += 1
        with open(osp.join(base, f"images_variant_{split_name}.txt"), "w") as f:
            f.writelines(lines)


# ---------------------------------------------------------------- the ImageNet family

def _write_classnames(path: str) -> None:
    os.makedirs(osp.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("".join(f"{wnid} {name}\n" for wnid, name in IMAGENET_CLASSES))


def _write_imagenet(root: str, rng: np.random.Generator) -> None:
    base = osp.join(root, "imagenet")
    _write_classnames(osp.join(base, "classnames.txt"))
    for label, (wnid, _) in enumerate(IMAGENET_CLASSES):
        for i in range(PER_CLASS["train"]):
            write_jpeg(osp.join(base, "images", "train", wnid, f"{wnid}_{i}.JPEG"), _colour(label), rng)
        for i in range(PER_CLASS["test"]):
            write_jpeg(osp.join(base, "images", "val", wnid, f"ILSVRC2012_val_{label:04d}{i}.JPEG"),
                       _colour(label), rng)


def _write_wnid_folders(base: str, image_dir: str, indices: list[int], rng: np.random.Generator) -> None:
    _write_classnames(osp.join(base, "classnames.txt"))
    for index in indices:
        wnid = IMAGENET_CLASSES[index][0]
        for i in range(TARGET_PER_CLASS):
            write_jpeg(osp.join(base, image_dir, wnid, f"{i}.jpg"), _colour(index), rng)


def _write_imagenetv2(root: str, rng: np.random.Generator) -> None:
    base = osp.join(root, "imagenetv2")
    _write_classnames(osp.join(base, "classnames.txt"))
    for label in range(len(IMAGENET_CLASSES)):
        for i in range(TARGET_PER_CLASS):
            write_jpeg(osp.join(base, "imagenetv2-matched-frequency-format-val", str(label), f"{i}.jpeg"),
                       _colour(label), rng)


def _write_imagenet_a(root: str, rng: np.random.Generator) -> None:
    base = osp.join(root, "imagenet-adversarial")
    _write_wnid_folders(base, "imagenet-a", IMAGENET_A_INDICES, rng)
    with open(osp.join(base, "imagenet-a", "README.txt"), "w") as f:
        f.write("not a class folder\n")


_WRITERS = {
    "ImageNet": _write_imagenet,
    "FGVCAircraft": _write_fgvc_aircraft,
    "ImageNetV2": _write_imagenetv2,
    "ImageNetSketch": lambda root, rng: _write_wnid_folders(
        osp.join(root, "imagenet-sketch"), "images", list(range(len(IMAGENET_CLASSES))), rng),
    "ImageNetA": _write_imagenet_a,
    "ImageNetR": lambda root, rng: _write_wnid_folders(
        osp.join(root, "imagenet-rendition"), "imagenet-r", IMAGENET_R_INDICES, rng),
}
for _name in _JSON_DATASETS:
    _WRITERS[_name] = lambda root, rng, _name=_name: _write_json_dataset(root, _name, rng)


def _expected() -> dict[str, FakeDataset]:
    per_class = PER_CLASS
    out = {}
    for name, (_, _, _, classes, _) in _JSON_DATASETS.items():
        k = len(classes)
        out[name] = FakeDataset(_SHORT_NAMES[name], [c for _, c in classes],
                                k * per_class["train"], k * per_class["val"], k * per_class["test"])
    k = len(_AIRCRAFT)
    out["FGVCAircraft"] = FakeDataset("fgvc_aircraft", list(_AIRCRAFT), k * per_class["train"],
                                      k * per_class["val"], k * per_class["test"])
    names = [name for _, name in IMAGENET_CLASSES]
    k = len(names)
    out["ImageNet"] = FakeDataset("imagenet", names, k * per_class["train"], k * per_class["test"],
                                  k * per_class["test"])
    for name, indices in (("ImageNetV2", range(k)), ("ImageNetSketch", range(k)),
                          ("ImageNetA", IMAGENET_A_INDICES), ("ImageNetR", IMAGENET_R_INDICES)):
        n = len(indices) * TARGET_PER_CLASS
        out[name] = FakeDataset(_SHORT_NAMES[name], [names[i] for i in indices], n, None, n)
    return out


FAKE_DATASETS: dict[str, FakeDataset] = _expected()  # registry name -> what the loader should read


def make_fake_trees(root: str, names: list[str] | None = None) -> None:
    """Write the fake tree of each named dataset (registry or config name; default: all 15) under ``root``."""
    by_short = {v: k for k, v in _SHORT_NAMES.items()}
    selected = list(_WRITERS) if names is None else [by_short.get(n, n) for n in names]
    unknown = [n for n in selected if n not in _WRITERS]
    if unknown:
        raise ValueError(f"make_fake_trees: unknown dataset(s) {unknown}; valid: {sorted(_WRITERS)}")
    for name in selected:
        # One generator per dataset, so a tree's pixels do not depend on which others were written.
        rng = np.random.default_rng(sorted(_WRITERS).index(name))
        _WRITERS[name](root, rng)
