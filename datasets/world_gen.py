"""The embedded world on disk: class list, seed streams, and a CoOp-style tree written once and reused.

Layout under ``<root>/world/``::

    manifest.json                              generator version, seed, sizes, classes
    <domain>/images/<colour>_<shape>/NNNN.png  32x32 RGB
    <domain>/split_world_<domain>.json         {"train"|"val"|"test": [[rel, label, classname], ...]}

Each domain folder is a self-contained dataset folder (its own ``split_fewshot/`` cache next to it).
"""
from __future__ import annotations

import json
import logging
import os
import os.path as osp
import shutil
from dataclasses import asdict, dataclass

import numpy as np
from tqdm import tqdm

from .world_render import COLOURS, DOMAINS, SHAPES, render_scene

logger = logging.getLogger(__name__)

GENERATOR_VERSION = 1
WORLD_DIR = "world"
MANIFEST = "manifest.json"

# Seed streams: every image has its own generator, seeded by (seed, stream, domain, class, index),
# so images do not depend on generation order and the streams never overlap.
STREAM_PROMPT_LEARNING = 0
STREAM_PRETRAIN = 1
STREAM_ZEROSHOT_CHECK = 2


@dataclass(frozen=True)
class WorldSpec:
    """What a generated tree holds; the manifest stores it so a mismatch triggers regeneration."""

    seed: int = 0
    image_size: int = 32
    n_train: int = 16  # per class and domain; 16 shots is the protocol's largest K
    n_val: int = 4
    n_test: int = 20
    version: int = GENERATOR_VERSION


def class_attributes() -> list[tuple[str, str]]:
    """(colour, shape) per label: the checkerboard half first, so base and new classes are compositional.

    Base/new subsampling keeps the first half of the labels as base. Putting the combinations with
    even (colour index + shape index) first means every colour and every shape occurs in both halves,
    and a new class is an unseen *combination* of seen attributes.
    """
    combos = [(ci, si) for ci in range(len(COLOURS)) for si in range(len(SHAPES))]
    ordered = [c for c in combos if sum(c) % 2 == 0] + [c for c in combos if sum(c) % 2 == 1]
    colours = list(COLOURS)
    return [(colours[ci], SHAPES[si]) for ci, si in ordered]


def class_names() -> list[str]:
    """Class names by label, e.g. ``"red circle"``."""
    return [f"{c} {s}" for c, s in class_attributes()]


def image_rng(seed: int, stream: int, domain: str, label: int, index: int) -> np.random.Generator:
    """The generator that draws one image."""
    return np.random.default_rng([seed, stream, DOMAINS.index(domain), label, index])


def split_path(root: str, domain: str) -> str:
    """The CoOp-format split JSON of ``domain`` under data root ``root``."""
    return osp.join(root, WORLD_DIR, domain, f"split_world_{domain}.json")


def _read_manifest(world_dir: str) -> dict | None:
    path = osp.join(world_dir, MANIFEST)
    if not osp.isfile(path):
        return None
    with open(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError:
            logger.warning("Unreadable world manifest %s; regenerating", path)
            return None


def expected_manifest(spec: WorldSpec) -> dict:
    """The manifest a complete tree for ``spec`` carries."""
    return {"spec": asdict(spec), "domains": list(DOMAINS), "classnames": class_names()}


def is_complete(root: str, spec: WorldSpec = WorldSpec()) -> bool:
    """Whether ``<root>/world`` was generated with ``spec`` and every split file is there."""
    world_dir = osp.join(root, WORLD_DIR)
    if _read_manifest(world_dir) != expected_manifest(spec):
        return False
    return all(osp.isfile(split_path(root, d)) for d in DOMAINS)


def _write_domain(root: str, domain: str, spec: WorldSpec) -> None:
    domain_dir = osp.join(root, WORLD_DIR, domain)
    splits: dict[str, list] = {"train": [], "val": [], "test": []}
    counts = [("train", spec.n_train), ("val", spec.n_val), ("test", spec.n_test)]
    for label, name in enumerate(tqdm(class_names(), desc=f"world/{domain}", leave=False)):
        colour, shape = name.split(" ")
        folder = f"{colour}_{shape}"
        os.makedirs(osp.join(domain_dir, "images", folder), exist_ok=True)
        index = 0
        for split, n in counts:
            for _ in range(n):
                image, _attrs = render_scene(image_rng(spec.seed, STREAM_PROMPT_LEARNING, domain, label, index),
                                             colour, shape, domain, spec.image_size)
                rel = f"{folder}/{index:04d}.png"
                image.save(osp.join(domain_dir, "images", rel), optimize=False)
                splits[split].append([rel, label, name])
                index += 1
    with open(split_path(root, domain), "w") as f:
        json.dump(splits, f, indent=1)


def generate_world(root: str, spec: WorldSpec = WorldSpec()) -> str:
    """Write the world under ``<root>/world`` unless a matching tree is there; return that folder."""
    world_dir = osp.join(root, WORLD_DIR)
    if is_complete(root, spec):
        return world_dir
    if osp.exists(world_dir):
        logger.info("World at %s does not match %s; regenerating it", world_dir, spec)
        shutil.rmtree(world_dir)
    logger.info("Generating the world (%d classes x %d domains) under %s", len(class_names()), len(DOMAINS),
                world_dir)
    for domain in DOMAINS:
        _write_domain(root, domain, spec)
    # The manifest goes last: a tree interrupted mid-way has none and is regenerated next time.
    with open(osp.join(world_dir, MANIFEST), "w") as f:
        json.dump(expected_manifest(spec), f, indent=1)
    return world_dir


def render_pool(seed: int, stream: int, per_class: int, image_size: int = 32, domains=DOMAINS,
                ) -> tuple[np.ndarray, list[int], list[dict]]:
    """Render ``per_class`` images of every class in each domain in memory (pretraining and checks).

    Returns uint8 images [N, H, W, 3], labels, and attribute dicts.
    """
    images, labels, attrs = [], [], []
    names = class_names()
    total = len(domains) * len(names) * per_class
    with tqdm(total=total, desc=f"render stream {stream}", leave=False) as bar:
        for domain in domains:
            for label, name in enumerate(names):
                colour, shape = name.split(" ")
                for i in range(per_class):
                    image, a = render_scene(image_rng(seed, stream, domain, label, i), colour, shape, domain,
                                            image_size)
                    images.append(np.asarray(image))
                    labels.append(label)
                    attrs.append(a)
                bar.update(per_class)
    return np.stack(images), labels, attrs
