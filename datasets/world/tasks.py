"""The downstream datasets of the embedded world: label spaces, class names, templates, and how to draw a class.

Each task has its own label space. Labels are ordered so that the first half (the base classes of
base-to-new) and the second half hold different concepts: new object shapes, new textures, larger
counts, other colours, other digits; none is a recombination of base attributes. Class names
are the words a dataset would use, which the pretraining captions use often, rarely or in another
form (``datasets/world/vocab.py``). Downstream images differ from the pretraining corpus: one object,
large and uncluttered, mostly solid-coloured; full-frame texture swatches; plain ink-on-paper digits.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
from PIL import Image

from .digits import digit_part
from .render import COLOURS, PATTERNS, render_glyph, render_objects, render_swatch
from .vocab import DIGIT_NAMES

# (shape, class name) by label: 12 base, then 12 new shapes
OBJECT_CLASSES = (
    ("circle", "circle"), ("triangle", "triangle"), ("square", "square"), ("star", "star"), ("cross", "cross"),
    ("crescent", "crescent"), ("heart", "heart"), ("pentagon", "pentagon"), ("ring", "ring"), ("house", "house"),
    ("lightning", "lightning bolt"), ("oval", "ellipse"),
    ("diamond", "rhombus"), ("hexagon", "hexagon"), ("trapezoid", "trapezium"), ("semicircle", "semicircle"),
    ("arrow", "arrow"), ("teardrop", "teardrop"), ("hourglass", "hourglass"), ("parallelogram", "parallelogram"),
    ("cloud", "cloud"), ("tree", "tree"), ("mushroom", "mushroom"), ("flower", "flower"),
)
OBJECT_SHAPES = tuple(shape for shape, _ in OBJECT_CLASSES)
TEXTURE_CLASSES = (
    ("striped", "striped"), ("checkered", "chequered"), ("dotted", "dotted"), ("grid", "grid"),
    ("speckled", "speckled"),
    ("zigzag", "zigzagged"), ("wavy", "wavy"), ("crosshatched", "crosshatched"), ("concentric", "concentric"),
    ("brick", "brick"),
)
COUNT_CLASSES = tuple((str(n), name) for n, name in zip(range(1, 7), ("one", "two", "three", "four", "five", "six")))
# (corpus colour, paint-chart name) by label: 6 base hues, then 6 other colours. The names are the
# fine-grained kind (Flowers', Aircraft's): the captions use a few of them rarely and most never.
SHADE_CLASSES = (
    ("red", "crimson"), ("orange", "tangerine"), ("yellow", "lemon"), ("green", "emerald"), ("teal", "turquoise"),
    ("blue", "navy"),
    ("purple", "violet"), ("pink", "rose"), ("brown", "chocolate"), ("grey", "slate"), ("white", "ivory"),
    ("black", "ebony"),
)
DIGIT_CLASSES = tuple((str(d), DIGIT_NAMES[d]) for d in range(10))

Draw = Callable[[np.random.Generator, str, int, int], Image.Image]


@dataclass(frozen=True)
class WorldTask:
    """One downstream dataset: folder ``key`` under ``DATA/world``, classes by label, zero-shot template."""

    key: str
    classes: tuple[tuple[str, str], ...]  # (concept, class name)
    template: str
    draw: Draw  # (rng, concept, index within the class, image size) -> image
    capacity: Callable[[], int] | None = None  # images a class can have (the digits are a finite set)

    @property
    def classnames(self) -> list[str]:
        return [name for _, name in self.classes]


def _random_colour(rng: np.random.Generator) -> str:
    return list(COLOURS)[int(rng.integers(len(COLOURS)))]


def draw_object(domain: str, rng: np.random.Generator, shape: str, index: int, image_size: int) -> Image.Image:
    """One large object of ``shape`` in a random colour (mostly solid), sometimes with a small distractor."""
    pattern = "solid" if rng.uniform() < 0.75 else PATTERNS[int(rng.integers(1, len(PATTERNS)))]
    objects = [{"shape": shape, "colour": _random_colour(rng), "pattern": pattern, "radius": rng.uniform(0.28, 0.4)}]
    if rng.uniform() < 0.4:
        other = [s for s in OBJECT_SHAPES if s != shape][int(rng.integers(len(OBJECT_SHAPES) - 1))]
        objects.append({"shape": other, "colour": _random_colour(rng), "radius": objects[0]["radius"] * 0.45})
    return render_objects(rng, objects, domain, image_size).image


def draw_texture(rng: np.random.Generator, pattern: str, index: int, image_size: int) -> Image.Image:
    return render_swatch(rng, pattern, _random_colour(rng), "photo", image_size).image


def draw_count(rng: np.random.Generator, count: str, index: int, image_size: int) -> Image.Image:
    """``count`` copies of one small shape in one colour on a plain or gradient background."""
    shape = OBJECT_SHAPES[int(rng.integers(len(OBJECT_SHAPES)))]
    colour, radius = _random_colour(rng), rng.uniform(0.08, 0.12)
    objects = [{"shape": shape, "colour": colour, "radius": radius} for _ in range(int(count))]
    return render_objects(rng, objects, "photo", image_size, bg_kind=("plain", "gradient")[int(rng.integers(2))]).image


def draw_shade(rng: np.random.Generator, colour: str, index: int, image_size: int) -> Image.Image:
    """One large solid object of a random shape in ``colour``."""
    shape = OBJECT_SHAPES[int(rng.integers(len(OBJECT_SHAPES)))]
    obj = {"shape": shape, "colour": colour, "radius": rng.uniform(0.3, 0.4)}
    return render_objects(rng, [obj], "photo", image_size).image


def draw_digit(rng: np.random.Generator, digit: str, index: int, image_size: int) -> Image.Image:
    """The ``index``-th downstream glyph of ``digit``, upscaled: dark ink on light paper, as scanned."""
    glyph = digit_part("downstream")[int(digit)][index]
    ink = np.full(3, rng.uniform(10, 60))
    paper = np.full(3, rng.uniform(220, 250))
    return render_glyph(rng, glyph, ink, paper, image_size, scale=(0.8, 0.92), max_shift=0.03)


def _tasks() -> dict[str, WorldTask]:
    tasks = {
        "objects": WorldTask("objects", OBJECT_CLASSES, "a photo of a {}.", partial(draw_object, "photo")),
        "objects_sketch": WorldTask("objects_sketch", OBJECT_CLASSES, "a photo of a {}.",
                                    partial(draw_object, "sketch")),
        "objects_painting": WorldTask("objects_painting", OBJECT_CLASSES, "a photo of a {}.",
                                      partial(draw_object, "painting")),
        "objects_cartoon": WorldTask("objects_cartoon", OBJECT_CLASSES, "a photo of a {}.",
                                     partial(draw_object, "cartoon")),
        "textures": WorldTask("textures", TEXTURE_CLASSES, "a photo of a {} texture.", draw_texture),
        "counts": WorldTask("counts", COUNT_CLASSES, "a photo of {} shapes.", draw_count),
        "shades": WorldTask("shades", SHADE_CLASSES, "a photo of a {} object.", draw_shade),
        "digits": WorldTask("digits", DIGIT_CLASSES, "a photo of the digit {}.", draw_digit,
                            capacity=lambda: min(len(g) for g in digit_part("downstream"))),
    }
    return tasks


TASKS: dict[str, WorldTask] = _tasks()
