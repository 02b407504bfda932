"""The world's "web": an endless, seeded stream of image–caption pairs for pretraining its small CLIP.

Sample ``i`` of seed ``s`` depends only on ``(s, i)``, so any worker can render any sample and a
pretraining run is reproducible whatever the order. The corpus covers more concepts than any
downstream label set (30 shapes, 12 colours, 11 patterns, counts 1-8, 8 directions, digits, 4 styles),
in cluttered scenes of every size, with alt-text-like captions: many phrasings, extra or missing
attributes, junk words, wrong words, and each concept's vocabulary as ``vocab`` weighs it.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from .digits import digit_part
from .render import COLOURS, DOMAINS, PATTERNS, SHAPES, render_glyph, render_objects, render_swatch
from .vocab import (
    COLOUR_WORDS,
    COUNT_WORDS,
    DIGIT_NAMES,
    DIGIT_WORD_WEIGHT,
    DIRECTION_WORDS,
    DIRECTIONS,
    DOMAIN_WORDS,
    EMPTY_CAPTIONS,
    JUNK,
    PATTERN_WORDS,
    SHAPE_WORDS,
    pick,
    plural,
)

STREAM_PRETRAIN = 1  # seed stream of the corpus; the datasets on disk use stream 0
# share of each kind of sample in the corpus
KINDS = {"object": 0.48, "count": 0.14, "arrow": 0.1, "swatch": 0.13, "digit": 0.15}
DOMAIN_SHARE = {"photo": 0.45, "cartoon": 0.2, "sketch": 0.15, "painting": 0.2}
BACKGROUNDS = ("plain", "gradient", "pattern", "scene", "paper", "pastel")
WRONG_WORD = 0.06  # a caption names the wrong shape / colour this often
EMPTY = 0.04  # a caption says nothing about the image this often

_COLOURS = tuple(COLOURS)


def _choice(rng: np.random.Generator, items):
    return items[int(rng.integers(len(items)))]


def _domain(rng: np.random.Generator) -> str:
    p = np.array([DOMAIN_SHARE[d] for d in DOMAINS])
    return DOMAINS[int(rng.choice(len(DOMAINS), p=p / p.sum()))]


def _maybe(rng: np.random.Generator, p: float, text: str) -> str:
    return text if rng.uniform() < p else ""


def _join(*parts: str) -> str:
    return " ".join(p for p in parts if p).replace(" ,", ",").strip(" ,")


def _colour_word(rng: np.random.Generator, colour: str) -> str:
    if rng.uniform() < WRONG_WORD:
        colour = _choice(rng, _COLOURS)
    return pick(rng, COLOUR_WORDS[colour])


def _shape_word(rng: np.random.Generator, shape: str) -> str:
    if rng.uniform() < WRONG_WORD:
        shape = _choice(rng, SHAPES)
    return pick(rng, SHAPE_WORDS[shape])


def _style_phrase(rng: np.random.Generator, domain: str, p: float) -> str:
    return pick(rng, DOMAIN_WORDS[domain]) if rng.uniform() < p else ""


def _decorate(rng: np.random.Generator, caption: str) -> str:
    """Alt-text noise: junk words before or after, file-name prefixes, and captions that say nothing."""
    if rng.uniform() < EMPTY:
        return _choice(rng, EMPTY_CAPTIONS) + _maybe(rng, 0.5, f" {int(rng.integers(1, 9999))}")
    if rng.uniform() < 0.3:
        caption = f"{caption} {_choice(rng, JUNK)}"
    if rng.uniform() < 0.1:
        caption = f"{_choice(rng, JUNK)} {caption}"
    if rng.uniform() < 0.05:
        caption = f"img_{int(rng.integers(100, 9999))} {caption}"
    return caption


def _object_caption(rng: np.random.Generator, attrs: dict) -> str:
    main = attrs["objects"][0]
    noun = _shape_word(rng, main["shape"])
    colour = _maybe(rng, 0.8, _colour_word(rng, main["colour"]))
    adjs, nouns = PATTERN_WORDS.get(main["pattern"], ([], []))
    pattern_adj = pick(rng, adjs) if adjs and rng.uniform() < 0.5 else ""
    pattern_noun = pick(rng, nouns) if nouns and not pattern_adj and rng.uniform() < 0.6 else ""
    size = _maybe(rng, 0.25, ("small" if main["radius"] < 0.22 else "large" if main["radius"] > 0.35 else ""))
    style = _style_phrase(rng, attrs["domain"], 0.5)
    thing = _join(size, colour, pattern_adj, noun)
    form = int(rng.integers(7))
    if form == 0 and style:
        caption = f"a {style} of a {thing}"
    elif form == 1:
        caption = _join(thing, style)
    elif form == 2:
        caption = _join(noun + ",", colour, pattern_adj, style)
    elif form == 3:
        caption = f"{thing} {style} on a {_choice(rng, ('plain', 'busy', 'dark', 'light', 'colorful'))} background"
    elif form == 4:
        caption = _join(thing, _choice(rng, ("icon", "shape", "symbol", "sticker", "emoji")))
    elif form == 5:
        caption = _join("a", thing)
    else:
        caption = _join(thing)
    if pattern_noun:
        caption = f"{caption} with {pattern_noun}"
    for other in attrs["objects"][1:]:
        if rng.uniform() < 0.25:
            caption = f"{caption} and a {_join(_colour_word(rng, other['colour']), _shape_word(rng, other['shape']))}"
    return caption


def _sample_object(rng: np.random.Generator, image_size: int) -> tuple[Image.Image, str]:
    domain = _domain(rng)
    main = {"shape": _choice(rng, SHAPES), "colour": _choice(rng, _COLOURS),
            "pattern": "solid" if rng.uniform() < 0.65 else _choice(rng, PATTERNS[1:]),
            "radius": rng.uniform(0.18, 0.45)}
    objects = [main]
    for _ in range(int(rng.integers(0, 3))):
        objects.append({"shape": _choice(rng, SHAPES), "colour": _choice(rng, _COLOURS),
                        "pattern": "solid" if rng.uniform() < 0.7 else _choice(rng, PATTERNS[1:]),
                        "radius": main["radius"] * rng.uniform(0.3, 0.7)})
    bg = _choice(rng, BACKGROUNDS) if rng.uniform() < 0.5 else None
    scene = render_objects(rng, objects, domain, image_size, bg_kind=bg)
    return scene.image, _object_caption(rng, scene.attrs)


def _sample_count(rng: np.random.Generator, image_size: int) -> tuple[Image.Image, str]:
    n = int(rng.integers(1, 9))
    shape, colour, domain = _choice(rng, SHAPES), _choice(rng, _COLOURS), _domain(rng)
    radius = rng.uniform(0.06, 0.14)
    objects = [{"shape": shape, "colour": colour, "radius": radius * rng.uniform(0.85, 1.15)} for _ in range(n)]
    bg = _choice(rng, BACKGROUNDS) if rng.uniform() < 0.5 else None
    image = render_objects(rng, objects, domain, image_size, bg_kind=bg).image
    count = pick(rng, COUNT_WORDS[n])
    noun = _shape_word(rng, shape)
    nouns = noun if n == 1 else plural(noun)
    colour_word = _maybe(rng, 0.6, _colour_word(rng, colour))
    form = int(rng.integers(4))
    if form == 0:
        caption = _join(count, colour_word, nouns)
    elif form == 1:
        caption = _join(count, colour_word, nouns, _style_phrase(rng, domain, 0.6))
    elif form == 2:
        caption = f"{_style_phrase(rng, domain, 1.0)} of {_join(count, colour_word, nouns)}"
    else:
        caption = _join(count, _choice(rng, ("shapes", "objects", "things", "items")) if n > 1 else "shape")
    return image, caption


def _sample_arrow(rng: np.random.Generator, image_size: int) -> tuple[Image.Image, str]:
    direction = _choice(rng, tuple(DIRECTIONS))
    domain, colour = _domain(rng), _choice(rng, _COLOURS)
    arrow = {"shape": _choice(rng, ("arrow", "arrow", "arrow", "chevron")), "colour": colour,
             "radius": rng.uniform(0.15, 0.42), "angle": DIRECTIONS[direction] + rng.uniform(-0.25, 0.25)}
    if arrow["shape"] == "chevron":  # the chevron's tip points down (+y) at angle 0
        arrow["angle"] -= np.pi / 2
    objects = [arrow] + [{"shape": _choice(rng, SHAPES), "colour": _choice(rng, _COLOURS),
                          "radius": arrow["radius"] * rng.uniform(0.3, 0.6)} for _ in range(int(rng.integers(0, 3)))]
    image = render_objects(rng, objects, domain, image_size).image
    words = pick(rng, DIRECTION_WORDS[direction])
    noun = "arrow" if arrow["shape"] == "arrow" else pick(rng, SHAPE_WORDS["chevron"])
    colour_word = _maybe(rng, 0.5, _colour_word(rng, colour))
    form = int(rng.integers(3))
    if form == 0:
        caption = f"{_join(colour_word, noun)} pointing {words}"
    elif form == 1:
        caption = _join("a", colour_word, noun, "pointing", words, _style_phrase(rng, domain, 0.5))
    else:
        caption = _join(_choice(rng, ("sign", "direction sign", "pointer")), "pointing", words)
    return image, caption


def _sample_swatch(rng: np.random.Generator, image_size: int) -> tuple[Image.Image, str]:
    pattern = _choice(rng, PATTERNS[1:])
    colour, domain = _choice(rng, _COLOURS), _domain(rng)
    image = render_swatch(rng, pattern, colour, domain, image_size, period_frac=(0.08, 0.3)).image
    adjs, nouns = PATTERN_WORDS[pattern]
    colour_word = _maybe(rng, 0.5, _colour_word(rng, colour))
    form = int(rng.integers(5))
    if form == 0:
        caption = _join(colour_word, pick(rng, adjs), "pattern")
    elif form == 1:
        caption = _join(colour_word, pick(rng, nouns))
    elif form == 2:
        caption = _join("texture of", pick(rng, nouns))
    elif form == 3:
        caption = _join(pick(rng, adjs), _choice(rng, ("fabric", "wallpaper", "background", "paper", "tile")))
    else:
        caption = _join(colour_word, "and white", pick(rng, nouns), "background")
    return image, caption


def _sample_digit(rng: np.random.Generator, image_size: int) -> tuple[Image.Image, str]:
    digit = int(rng.integers(10))
    glyphs = digit_part("pretrain")[digit]
    glyph = glyphs[int(rng.integers(len(glyphs)))]
    ink = np.array(rng.uniform(0, 255, 3))
    paper = 255 - ink if rng.uniform() < 0.5 else np.array(rng.uniform(0, 255, 3))
    if abs(paper.mean() - ink.mean()) < 70:
        paper = 255 - ink
    image = render_glyph(rng, glyph, ink, paper, image_size, scale=(0.5, 0.95), max_shift=0.18, max_angle=0.3,
                         noise=rng.uniform(2, 15))
    word_p = DIGIT_WORD_WEIGHT[digit] / 10
    number = DIGIT_NAMES[digit] if rng.uniform() < word_p else str(digit)
    form = int(rng.integers(5))
    caption = [f"handwritten {number}", f"the number {number}", f"digit {number}", number,
               f"a scan of a handwritten {number}"][form]
    return image, caption


_SAMPLERS = {"object": _sample_object, "count": _sample_count, "arrow": _sample_arrow, "swatch": _sample_swatch,
             "digit": _sample_digit}


def pretrain_sample(seed: int, index: int, image_size: int = 32) -> tuple[Image.Image, str]:
    """Image and caption number ``index`` of the corpus of ``seed``."""
    rng = np.random.default_rng([seed, STREAM_PRETRAIN, index])
    names = list(KINDS)
    p = np.array([KINDS[k] for k in names])
    kind = names[int(rng.choice(len(names), p=p / p.sum()))]
    image, caption = _SAMPLERS[kind](rng, image_size)
    return image, _decorate(rng, caption)
