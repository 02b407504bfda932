"""Procedural renderer of the embedded world: shapes, fill patterns, backgrounds and drawing styles.

Pure functions of a numpy ``Generator``: the same generator state gives the same pixels. Drawing
happens at ``SUPERSAMPLE`` times the output size and is box-filtered down, so edges are anti-aliased
without depending on PIL's anti-aliasing options. Every scene function returns a ``Scene``: the
image plus the attributes a caption may mention.
"""
from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

SUPERSAMPLE = 4

# name -> (hue centre, saturation range, value range); hue None = achromatic.
COLOURS: dict[str, tuple[float | None, tuple[float, float], tuple[float, float]]] = {
    "red": (0.0, (0.65, 1.0), (0.6, 1.0)),
    "orange": (0.075, (0.7, 1.0), (0.75, 1.0)),
    "yellow": (0.155, (0.65, 1.0), (0.8, 1.0)),
    "green": (0.33, (0.55, 1.0), (0.45, 0.9)),
    "teal": (0.48, (0.55, 1.0), (0.45, 0.85)),
    "blue": (0.61, (0.6, 1.0), (0.5, 1.0)),
    "purple": (0.77, (0.5, 0.9), (0.45, 0.9)),
    "pink": (0.9, (0.35, 0.6), (0.85, 1.0)),
    "brown": (0.07, (0.55, 0.85), (0.3, 0.5)),
    "grey": (None, (0.0, 0.05), (0.4, 0.7)),
    "white": (None, (0.0, 0.05), (0.9, 1.0)),
    "black": (None, (0.0, 0.1), (0.05, 0.2)),
}
HUE_JITTER = 0.02

DOMAINS: tuple[str, ...] = ("photo", "sketch", "painting", "cartoon")

PATTERNS: tuple[str, ...] = ("solid", "striped", "dotted", "checkered", "zigzag", "grid", "wavy", "speckled",
                             "crosshatched", "concentric", "brick")


def _regular(n: int, r: float = 1.0, phase: float = -math.pi / 2) -> list[tuple[float, float]]:
    return [(r * math.cos(phase + 2 * math.pi * k / n), r * math.sin(phase + 2 * math.pi * k / n)) for k in range(n)]


def _disc(cx: float, cy: float, r: float, ry: float | None = None, n: int = 36) -> list[tuple[float, float]]:
    ry = r if ry is None else ry
    return [(cx + r * math.cos(2 * math.pi * k / n), cy + ry * math.sin(2 * math.pi * k / n)) for k in range(n)]


def _star_points(tips: int, outer: float, inner: float) -> list[tuple[float, float]]:
    return [((outer if k % 2 == 0 else inner) * math.cos(-math.pi / 2 + math.pi * k / tips),
             (outer if k % 2 == 0 else inner) * math.sin(-math.pi / 2 + math.pi * k / tips)) for k in range(2 * tips)]


def _heart() -> list[tuple[float, float]]:
    points = []
    for k in range(40):
        t = 2 * math.pi * k / 40
        x = 16 * math.sin(t) ** 3
        y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
        points.append((x / 16, -y / 16 + 0.1))
    return points


def _semicircle() -> list[tuple[float, float]]:
    return [(1.1 * math.cos(math.pi + math.pi * k / 24), 0.45 + 1.1 * math.sin(math.pi + math.pi * k / 24))
            for k in range(25)]


def _sun() -> list[tuple[float, float]]:
    return _star_points(10, 1.1, 0.62)


# Each shape is a list of (polygon in unit coordinates, fill): 255 paints, 0 cuts a hole. y points down.
SHAPE_PARTS: dict[str, list[tuple[list[tuple[float, float]], int]]] = {
    "circle": [(_disc(0, 0, 1.0), 255)],
    "triangle": [(_regular(3, 1.15), 255)],
    "square": [(_regular(4, 1.1, math.pi / 4), 255)],
    "star": [(_star_points(5, 1.2, 0.5), 255)],
    "cross": [([(0.34, 1), (0.34, 0.34), (1, 0.34), (1, -0.34), (0.34, -0.34), (0.34, -1), (-0.34, -1),
                (-0.34, -0.34), (-1, -0.34), (-1, 0.34), (-0.34, 0.34), (-0.34, 1)], 255)],
    "crescent": [(_disc(0, 0, 1.0), 255), (_disc(0.5, -0.2, 0.85), 0)],
    "heart": [(_heart(), 255)],
    "diamond": [([(0, -1.2), (0.7, 0), (0, 1.2), (-0.7, 0)], 255)],
    "pentagon": [(_regular(5, 1.1), 255)],
    "hexagon": [(_regular(6, 1.05, 0), 255)],
    "ring": [(_disc(0, 0, 1.0), 255), (_disc(0, 0, 0.55), 0)],
    "oval": [(_disc(0, 0, 1.15, 0.6), 255)],
    "trapezoid": [([(-1.1, 0.6), (1.1, 0.6), (0.5, -0.6), (-0.5, -0.6)], 255)],
    "semicircle": [(_semicircle(), 255)],
    "house": [([(-0.75, -0.1), (0.75, -0.1), (0.75, 1), (-0.75, 1)], 255),
              ([(-1.0, -0.05), (0, -1.05), (1.0, -0.05)], 255)],
    "arrow": [([(-1, -0.25), (0.15, -0.25), (0.15, -0.65), (1.05, 0), (0.15, 0.65), (0.15, 0.25), (-1, 0.25)], 255)],
    "lightning": [([(-0.15, -1.1), (0.6, -1.1), (0.15, -0.2), (0.6, -0.2), (-0.35, 1.1), (-0.05, 0.15),
                    (-0.55, 0.15)], 255)],
    "teardrop": [(_disc(0, 0.3, 0.7), 255), ([(-0.62, 0.0), (0, -1.15), (0.62, 0.0)], 255)],
    "hourglass": [([(-0.8, -1), (0.8, -1), (0.12, 0), (0.8, 1), (-0.8, 1), (-0.12, 0)], 255)],
    "parallelogram": [([(-1.1, 0.55), (0.4, 0.55), (1.1, -0.55), (-0.4, -0.55)], 255)],
    "cloud": [(_disc(-0.55, 0.15, 0.45), 255), (_disc(0, -0.15, 0.62), 255), (_disc(0.55, 0.15, 0.45), 255),
              ([(-0.55, 0.15), (0.55, 0.15), (0.55, 0.6), (-0.55, 0.6)], 255)],
    "tree": [([(-0.85, 0.45), (0, -1.15), (0.85, 0.45)], 255), ([(-0.18, 0.4), (0.18, 0.4), (0.18, 1.1),
                                                                  (-0.18, 1.1)], 255)],
    "mushroom": [([(1.05 * math.cos(math.pi + math.pi * k / 20), 0.05 + 1.05 * math.sin(math.pi + math.pi * k / 20))
                   for k in range(21)], 255), ([(-0.3, 0), (0.3, 0), (0.3, 1), (-0.3, 1)], 255)],
    "flower": [(_disc(0.58 * math.cos(a), 0.58 * math.sin(a), 0.42), 255)
               for a in [2 * math.pi * k / 5 for k in range(5)]] + [(_disc(0, 0, 0.4), 255)],
    # shapes no downstream dataset names: the pretraining corpus is broader than any label set
    "octagon": [(_regular(8, 1.05, math.pi / 8), 255)],
    "chevron": [([(-1, -0.7), (0, 0.1), (1, -0.7), (1, 0), (0, 0.8), (-1, 0)], 255)],
    "kite": [([(0, -1.15), (0.65, -0.25), (0, 1.15), (-0.65, -0.25)], 255)],
    "sun": [(_sun(), 255)],
    "bowtie": [([(-1.1, -0.7), (0, 0), (-1.1, 0.7)], 255), ([(1.1, -0.7), (0, 0), (1.1, 0.7)], 255)],
    "key": [(_disc(-0.55, 0, 0.45), 255), (_disc(-0.55, 0, 0.2), 0),
            ([(-0.15, -0.12), (1.1, -0.12), (1.1, 0.12), (-0.15, 0.12)], 255),
            ([(0.7, 0.1), (0.85, 0.1), (0.85, 0.45), (0.7, 0.45)], 255)],
}
SHAPES: tuple[str, ...] = tuple(SHAPE_PARTS)


@lru_cache(maxsize=4)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel row and column indices (float) of a canvas, shared read-only between calls."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    yy.flags.writeable = xx.flags.writeable = False
    return yy, xx


@dataclass
class Scene:
    """A rendered image and what a caption may say about it."""

    image: Image.Image
    attrs: dict = field(default_factory=dict)


def random_rgb(rng: np.random.Generator, colour: str) -> np.ndarray:
    """An RGB triple (0..255 floats) of the named colour with jittered hue, saturation and value."""
    if colour not in COLOURS:
        raise ValueError(f"Unknown colour {colour!r}; expected one of {tuple(COLOURS)}")
    hue, sat, val = COLOURS[colour]
    h = 0.0 if hue is None else (hue + rng.uniform(-HUE_JITTER, HUE_JITTER)) % 1.0
    return np.array(colorsys.hsv_to_rgb(h, rng.uniform(*sat), rng.uniform(*val))) * 255


def shape_mask(shape: str, size: int, cx: float, cy: float, r: float, angle: float) -> Image.Image:
    """A binary ``L`` mask (0/255) of ``shape`` centred at (cx, cy) with radius ``r``, rotated by ``angle``."""
    if shape not in SHAPE_PARTS:
        raise ValueError(f"Unknown shape {shape!r}; expected one of {SHAPES}")
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    c, s = math.cos(angle), math.sin(angle)
    for points, fill in SHAPE_PARTS[shape]:
        draw.polygon([(cx + r * (x * c - y * s), cy + r * (x * s + y * c)) for x, y in points], fill=fill)
    return mask


def pattern_map(rng: np.random.Generator, pattern: str, size: int, period: float) -> np.ndarray:
    """A [size, size, 1] map in [0, 1] saying where a pattern's second colour shows (period in canvas pixels)."""
    yy, xx = _grid(size)
    theta = rng.uniform(0, math.pi)
    u = xx * math.cos(theta) + yy * math.sin(theta)
    v = -xx * math.sin(theta) + yy * math.cos(theta)
    p = period
    if pattern == "solid":
        out = np.zeros((size, size))
    elif pattern == "striped":
        out = (np.sin(2 * math.pi * u / p) > 0).astype(np.float64)
    elif pattern == "dotted":
        du, dv = (u % p) - p / 2, (v % p) - p / 2
        out = (du * du + dv * dv < (0.3 * p) ** 2).astype(np.float64)
    elif pattern == "checkered":
        out = ((np.floor(u / p) + np.floor(v / p)) % 2).astype(np.float64)
    elif pattern == "zigzag":
        tri = np.abs((v / p) % 2 - 1) * p  # triangle wave along v
        out = (np.sin(2 * math.pi * (u + tri) / p) > 0).astype(np.float64)
    elif pattern == "grid":
        w = max(p * 0.22, 1.5)
        out = (((u % p) < w) | ((v % p) < w)).astype(np.float64)
    elif pattern == "wavy":
        out = (np.sin(2 * math.pi * (u + 0.3 * p * np.sin(2 * math.pi * v / (2 * p))) / p) > 0).astype(np.float64)
    elif pattern == "speckled":
        cells = rng.uniform(size=(size // 4 + 1, size // 4 + 1)) < 0.3
        out = np.kron(cells, np.ones((4, 4)))[:size, :size].astype(np.float64)
    elif pattern == "crosshatched":
        w = max(p * 0.2, 1.5)
        a, b = (xx + yy) % p < w, (xx - yy) % p < w
        out = (a | b).astype(np.float64)
    elif pattern == "concentric":
        cx, cy = rng.uniform(0.3, 0.7, 2) * size
        out = (np.sin(2 * math.pi * np.hypot(xx - cx, yy - cy) / p) > 0).astype(np.float64)
    elif pattern == "brick":
        row = np.floor(yy / p)
        mortar_h = (yy % p) < max(p * 0.2, 1.5)
        mortar_v = ((xx + (row % 2) * p) % (2 * p)) < max(p * 0.2, 1.5)
        out = (mortar_h | mortar_v).astype(np.float64)
    else:
        raise ValueError(f"Unknown pattern {pattern!r}; expected one of {PATTERNS}")
    return out[..., None]


def fill_layer(rng: np.random.Generator, size: int, rgb: np.ndarray, pattern: str, period: float,
               second: np.ndarray | None = None) -> np.ndarray:
    """Float RGB [size, size, 3]: ``rgb`` with ``pattern`` in a second colour (default: a lighter or darker tint)."""
    base = np.broadcast_to(rgb, (size, size, 3))
    if pattern == "solid":
        return base.copy()
    if second is None:
        second = rgb * 0.35 if rgb.mean() > 110 else np.minimum(rgb + 140, 255)
    m = pattern_map(rng, pattern, size, period)
    return base * (1 - m) + second * m


def background(rng: np.random.Generator, kind: str, size: int) -> np.ndarray:
    """Float RGB background [size, size, 3] of one kind: plain, gradient, paper, pastel, pattern or scene."""
    if kind == "paper":
        return np.full((size, size, 3), rng.uniform(225, 250)) + rng.normal(0, 4, (size, size, 1))
    if kind == "pastel":
        rgb = np.array(colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0.1, 0.35), rng.uniform(0.8, 1.0))) * 255
        return np.broadcast_to(rgb, (size, size, 3)).copy()
    c0 = np.array(colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0, 0.35), rng.uniform(0.3, 0.9))) * 255
    if kind == "plain":
        return np.broadcast_to(c0, (size, size, 3)) + rng.normal(0, 3, (size, size, 1))
    c1 = np.array(colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0, 0.5), rng.uniform(0.2, 0.9))) * 255
    if kind == "gradient":
        theta = rng.uniform(0, 2 * math.pi)
        yy, xx = (g / size for g in _grid(size))
        t = np.clip(0.5 + (xx - 0.5) * math.cos(theta) + (yy - 0.5) * math.sin(theta), 0, 1)[..., None]
        return c0 * (1 - t) + c1 * t + rng.normal(0, 8, (size, size, 1))
    if kind == "pattern":  # low-contrast clutter: a random pattern between two muted colours
        pattern = PATTERNS[int(rng.integers(1, len(PATTERNS)))]
        m = pattern_map(rng, pattern, size, rng.uniform(0.1, 0.3) * size)
        return c0 * (1 - m) + (0.6 * c0 + 0.4 * c1) * m + rng.normal(0, 6, (size, size, 1))
    if kind == "scene":  # a horizon: sky above, ground below
        horizon = rng.uniform(0.4, 0.75) * size
        yy = _grid(size)[0][..., None]
        return np.where(yy < horizon, c0, c1) + rng.normal(0, 10, (size, size, 1))
    raise ValueError(f"Unknown background kind {kind!r}")


DOMAIN_BACKGROUNDS = {"photo": ("gradient", "plain", "scene"), "painting": ("gradient", "scene"),
                      "sketch": ("paper",), "cartoon": ("pastel",)}


def _outline(shape: str, size: int, cx: float, cy: float, r: float, angle: float, width: float) -> Image.Image:
    """A band about ``2 * width`` canvas pixels wide along the shape's boundary (grown minus shrunk mask)."""
    outer = shape_mask(shape, size, cx, cy, r + width, angle)
    inner = shape_mask(shape, size, cx, cy, max(r - width, 0.0), angle)
    return ImageChops.subtract(outer, inner)


def paint_shape(canvas: np.ndarray, rng: np.random.Generator, domain: str, shape: str, cx: float, cy: float,
                r: float, angle: float, fill: np.ndarray) -> np.ndarray:
    """Paint ``shape`` (canvas-pixel geometry) with the float RGB ``fill`` layer in the style of ``domain``."""
    size = canvas.shape[0]
    if domain == "sketch":  # coloured-pencil outline only: the shape and its colour survive, the fill does not
        stroke = _outline(shape, size, cx, cy, r, angle, width=rng.uniform(1.5, 3.0))
        alpha = np.asarray(stroke, dtype=np.float64)[..., None] / 255 * rng.uniform(0.7, 1.0)
        return canvas * (1 - alpha) + fill * rng.uniform(0.7, 1.0) * alpha
    alpha = np.asarray(shape_mask(shape, size, cx, cy, r, angle), dtype=np.float64)[..., None] / 255
    if domain == "photo":  # directional shading and fine grain
        theta = rng.uniform(0, 2 * math.pi)
        yy, xx = _grid(size)
        shade = 1.0 + 0.5 * (((xx - cx) * math.cos(theta) + (yy - cy) * math.sin(theta)) / max(r, 1.0))
        fill = fill * np.clip(shade, 0.6, 1.3)[..., None] + rng.normal(0, 6, (size, size, 1))
    elif domain == "painting":  # uneven pigment
        fill = fill + rng.normal(0, 22, (size, size, 3))
    canvas = canvas * (1 - alpha) + fill * alpha
    if domain == "cartoon":  # thick dark outline
        line = np.asarray(_outline(shape, size, cx, cy, r, angle, width=3.0), dtype=np.float64)[..., None] / 255
        canvas = canvas * (1 - line) + 20.0 * line
    return canvas


def finish(canvas: np.ndarray, rng: np.random.Generator, domain: str, image_size: int) -> Image.Image:
    """Clip, apply the domain's whole-image effect, and box-filter down to ``image_size``."""
    image = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8), "RGB")
    if domain == "painting":  # soft brush
        image = image.filter(ImageFilter.GaussianBlur(radius=rng.uniform(2.0, 4.0)))
    return image.resize((image_size, image_size), Image.Resampling.BOX)


def check_domain(domain: str) -> None:
    if domain not in DOMAINS:
        raise ValueError(f"Unknown domain {domain!r}; expected one of {DOMAINS}")


def place(rng: np.random.Generator, size: int, r: float, taken: list[tuple[float, float, float]],
          tries: int = 12) -> tuple[float, float]:
    """A centre for radius ``r`` inside the canvas, avoiding the discs in ``taken`` when it can."""
    margin = r + 1
    best, best_gap = None, -math.inf
    for _ in range(tries):
        cx, cy = rng.uniform(margin, size - margin, 2) if size - margin > margin else (size / 2, size / 2)
        gap = min((math.hypot(cx - x, cy - y) - r - tr for x, y, tr in taken), default=math.inf)
        if gap > 0:
            return cx, cy
        if gap > best_gap:
            best, best_gap = (cx, cy), gap
    return best


def render_objects(rng: np.random.Generator, objects: list[dict], domain: str, image_size: int = 32,
                   bg_kind: str | None = None) -> Scene:
    """Draw ``objects`` (dicts with shape, colour, pattern, radius as a fraction of the image, optional angle).

    Objects are placed in order, avoiding earlier ones when possible; the first is "the" object.
    """
    check_domain(domain)
    size = image_size * SUPERSAMPLE
    kind = bg_kind or DOMAIN_BACKGROUNDS[domain][int(rng.integers(len(DOMAIN_BACKGROUNDS[domain])))]
    canvas = background(rng, kind, size)
    taken: list[tuple[float, float, float]] = []
    placed = []
    for obj in objects:
        r = obj["radius"] * size
        cx, cy = place(rng, size, r, taken)
        taken.append((cx, cy, r))
        placed.append((obj, cx, cy, r))
    # draw back to front so that the first (main) object is never covered
    for obj, cx, cy, r in reversed(placed):
        rgb = random_rgb(rng, obj["colour"])
        fill = fill_layer(rng, size, rgb, obj.get("pattern", "solid"), period=rng.uniform(0.25, 0.4) * r)
        angle = obj["angle"] if obj.get("angle") is not None else rng.uniform(0, 2 * math.pi)
        canvas = paint_shape(canvas, rng, domain, obj["shape"], cx, cy, r, angle, fill)
    attrs = {"domain": domain, "background": kind, "objects": [dict(o) for o in objects]}
    return Scene(finish(canvas, rng, domain, image_size), attrs)


def render_swatch(rng: np.random.Generator, pattern: str, colour: str, domain: str, image_size: int = 32,
                  period_frac: tuple[float, float] = (0.12, 0.25)) -> Scene:
    """A full-frame texture swatch: ``pattern`` in ``colour`` and a second, contrasting colour."""
    check_domain(domain)
    size = image_size * SUPERSAMPLE
    rgb = random_rgb(rng, colour)
    second = np.array(colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0, 0.3), rng.uniform(0.1, 1.0))) * 255
    if abs(second.mean() - rgb.mean()) < 60:  # keep the pattern visible
        second = 255 - second
    canvas = fill_layer(rng, size, rgb, pattern, rng.uniform(*period_frac) * size, second)
    if domain == "photo":
        canvas = canvas * rng.uniform(0.8, 1.1) + rng.normal(0, 8, (size, size, 1))
    elif domain == "painting":
        canvas = canvas + rng.normal(0, 20, (size, size, 3))
    elif domain == "sketch":
        canvas = np.repeat(245 - (245 - canvas.mean(-1, keepdims=True)) * 0.6, 3, axis=-1)
    return Scene(finish(canvas, rng, domain, image_size), {"domain": domain, "pattern": pattern, "colour": colour})


def render_glyph(rng: np.random.Generator, glyph: np.ndarray, ink: np.ndarray, paper: np.ndarray,
                 image_size: int = 32, scale: tuple[float, float] = (0.75, 0.9), max_shift: float = 0.06,
                 max_angle: float = 0.0, noise: float = 3.0) -> Image.Image:
    """Ink a greyscale glyph (values in [0, 1], any size) onto paper: resized, shifted and rotated at random."""
    size = image_size * SUPERSAMPLE
    side = max(int(rng.uniform(*scale) * size), 4)
    g = Image.fromarray((np.clip(glyph, 0, 1) * 255).astype(np.uint8), "L").resize((side, side),
                                                                                  Image.Resampling.BICUBIC)
    if max_angle:
        g = g.rotate(float(np.degrees(rng.uniform(-max_angle, max_angle))), resample=Image.Resampling.BILINEAR)
    layer = Image.new("L", (size, size), 0)
    offset = (np.array([size - side, size - side]) / 2 + rng.uniform(-max_shift, max_shift, 2) * size).astype(int)
    layer.paste(g, tuple(int(o) for o in offset))
    alpha = np.asarray(layer, dtype=np.float64)[..., None] / 255
    canvas = np.broadcast_to(paper, (size, size, 3)) * (1 - alpha) + ink * alpha + rng.normal(0, noise, (size, size, 1))
    return Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8), "RGB").resize((image_size, image_size),
                                                                                   Image.Resampling.BOX)
