"""The words of the embedded world: how its "web" captions name each concept, with weights.

A downstream dataset names its classes with one word each (``datasets/world/tasks.py``); how often the
captions use that word decides how well a hand-written prompt fits the class, as with real CLIP:
``"crescent"`` is rare next to ``"moon"``, ``"rhombus"`` next to ``"diamond"``, ``"chequered"`` next to
``"checkered"``, ``"northeast"`` next to ``"up and to the right"``. Weights are relative frequencies.
"""
from __future__ import annotations

import numpy as np

Words = list[tuple[str, float]]

SHAPE_WORDS: dict[str, Words] = {
    "circle": [("circle", 6), ("disc", 2), ("round shape", 2)],
    "triangle": [("triangle", 9), ("triangular shape", 1)],
    "square": [("square", 8), ("box", 2)],
    "star": [("star", 10)],
    "cross": [("plus sign", 6), ("plus", 3), ("cross", 1)],
    "crescent": [("moon", 7), ("crescent moon", 2.5), ("crescent", 0.5)],
    "heart": [("heart", 10)],
    "diamond": [("diamond", 9.5), ("rhombus", 0.5)],
    "pentagon": [("pentagon", 10)],
    "hexagon": [("hexagon", 6), ("hex", 4)],
    "ring": [("ring", 5), ("donut", 5)],
    "oval": [("oval", 7), ("ellipse", 3)],
    "trapezoid": [("trapezoid", 9.5), ("trapezium", 0.5)],
    "semicircle": [("half circle", 8), ("semicircle", 2)],
    "house": [("house", 8), ("home", 2)],
    "arrow": [("arrow", 10)],
    "lightning": [("lightning", 5), ("bolt", 3), ("lightning bolt", 2)],
    "teardrop": [("drop", 6), ("raindrop", 3), ("teardrop", 1)],
    "hourglass": [("hourglass", 10)],
    "parallelogram": [("parallelogram", 10)],
    "cloud": [("cloud", 10)],
    "tree": [("tree", 7), ("pine tree", 3)],
    "mushroom": [("mushroom", 10)],
    "flower": [("flower", 7), ("blossom", 3)],
    "octagon": [("octagon", 8), ("stop sign shape", 2)],
    "chevron": [("chevron", 6), ("v shape", 4)],
    "kite": [("kite", 10)],
    "sun": [("sun", 8), ("sunburst", 2)],
    "bowtie": [("bow tie", 7), ("bowtie", 3)],
    "key": [("key", 10)],
}

PLURALS = {"cross": "crosses", "plus": "pluses", "box": "boxes", "lightning": "lightning bolts",
           "hourglass": "hourglasses", "bolt": "bolts", "plus sign": "plus signs", "hex": "hexes",
           "disc": "discs", "round shape": "round shapes"}

COLOUR_WORDS: dict[str, Words] = {
    "red": [("red", 9), ("crimson", 1)],
    "orange": [("orange", 10)],
    "yellow": [("yellow", 9), ("golden", 1)],
    "green": [("green", 10)],
    "teal": [("teal", 5), ("turquoise", 3), ("cyan", 2)],
    "blue": [("blue", 9), ("navy", 1)],
    "purple": [("purple", 7), ("violet", 3)],
    "pink": [("pink", 10)],
    "brown": [("brown", 10)],
    "grey": [("grey", 5), ("gray", 5)],
    "white": [("white", 10)],
    "black": [("black", 10)],
}

# pattern -> (adjectives, nouns)
PATTERN_WORDS: dict[str, tuple[Words, Words]] = {
    "striped": ([("striped", 5), ("stripy", 1)], [("stripes", 8)]),
    "dotted": ([("spotted", 4), ("dotted", 1)], [("polka dots", 6), ("spots", 3)]),
    "checkered": ([("checkered", 6), ("chequered", 0.3)], [("checkerboard", 5), ("checks", 2)]),
    "zigzag": ([("zigzag", 8)], [("zigzags", 3), ("zigzag pattern", 3)]),
    "grid": ([("grid", 6), ("plaid", 2)], [("grid", 6), ("grid lines", 2)]),
    "wavy": ([("wavy", 6)], [("waves", 6)]),
    "speckled": ([("speckled", 3), ("grainy", 3), ("noisy", 3)], [("speckles", 3), ("noise", 3)]),
    "crosshatched": ([("hatched", 5)], [("crosshatch", 5), ("hatching", 3)]),
    "concentric": ([("bullseye", 4), ("concentric", 2)], [("concentric circles", 5), ("rings", 2)]),
    "brick": ([("brick", 7)], [("bricks", 6), ("brickwork", 2)]),
}

DOMAIN_WORDS: dict[str, Words] = {
    "photo": [("photo", 5), ("photograph", 2), ("picture", 2), ("pic", 1)],
    "sketch": [("sketch", 4), ("drawing", 4), ("pencil drawing", 2), ("doodle", 2)],
    "painting": [("painting", 5), ("watercolor", 3), ("artwork", 2)],
    "cartoon": [("cartoon", 4), ("clipart", 3), ("illustration", 3), ("icon", 2)],
}

COUNT_WORDS: dict[int, Words] = {
    1: [("one", 3), ("a single", 4), ("1", 3)],
    2: [("two", 4), ("2", 4), ("a pair of", 2)],
    3: [("three", 4), ("3", 5), ("a trio of", 1)],
    4: [("four", 4), ("4", 6)],
    5: [("five", 4), ("5", 6)],
    6: [("six", 4), ("6", 6), ("half a dozen", 0.5)],
    7: [("seven", 4), ("7", 6)],
    8: [("eight", 4), ("8", 6)],
}

# direction -> words after "pointing"; angle in radians (image y points down, 0 = right)
DIRECTIONS: dict[str, float] = {
    "up": -np.pi / 2, "right": 0.0, "down": np.pi / 2, "left": np.pi,
    "northeast": -np.pi / 4, "southeast": np.pi / 4, "southwest": 3 * np.pi / 4, "northwest": -3 * np.pi / 4,
}
DIRECTION_WORDS: dict[str, Words] = {
    "up": [("up", 7), ("upward", 2), ("north", 1)],
    "right": [("right", 7), ("to the right", 2), ("east", 1)],
    "down": [("down", 7), ("downward", 2), ("south", 1)],
    "left": [("left", 7), ("to the left", 2), ("west", 1)],
    "northeast": [("up and to the right", 6), ("diagonally up right", 3), ("northeast", 0.5)],
    "southeast": [("down and to the right", 6), ("diagonally down right", 3), ("southeast", 0.5)],
    "southwest": [("down and to the left", 6), ("diagonally down left", 3), ("southwest", 0.5)],
    "northwest": [("up and to the left", 6), ("diagonally up left", 3), ("northwest", 0.5)],
}

DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# The captions write most digits as numerals; a few are seldom spelled out.
DIGIT_WORD_WEIGHT = (0.5, 3, 3, 2, 2, 0.5, 2, 3, 0.5, 2)

JUNK = ("hd", "free download", "stock image", "vector", "wallpaper", "#design", "jpg", "2017", "png", "high quality",
        "royalty free", "new", "cute", "simple", "art", "graphic", "logo", "best", "original")
EMPTY_CAPTIONS = ("untitled", "image", "photo", "img", "picture", "file", "screenshot", "download")


def pick(rng: np.random.Generator, words: Words) -> str:
    """One word drawn by weight."""
    weights = np.array([w for _, w in words], dtype=np.float64)
    return words[int(rng.choice(len(words), p=weights / weights.sum()))][0]


def plural(word: str) -> str:
    return PLURALS.get(word, word if word.endswith("s") else word + "s")


def word_share(words: Words, word: str) -> float:
    """The fraction of mentions of a concept that use ``word`` (0 when the captions never do)."""
    total = sum(w for _, w in words)
    return sum(w for name, w in words if name == word) / total
