"""Procedural renderer of the embedded world: one coloured shape among distractors, in four domains.

Pure functions of a numpy ``Generator``: the same generator state gives the same pixels.
Drawing happens at ``SUPERSAMPLE`` times the output size and is box-filtered down, so edges
are anti-aliased without depending on PIL's anti-aliasing options.
"""
from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

# Hue centres (HSV, 0..1). Red/orange/yellow and blue/purple are close on purpose:
# with the per-image hue jitter and shading they are the fine-grained part of the task.
COLOURS: dict[str, float] = {
    "red": 0.0,
    "orange": 0.075,
    "yellow": 0.155,
    "green": 0.33,
    "blue": 0.61,
    "purple": 0.77,
}
SHAPES: tuple[str, ...] = ("circle", "triangle", "square", "star", "cross", "crescent")
DOMAINS: tuple[str, ...] = ("photo", "sketch", "painting", "cartoon")

SUPERSAMPLE = 4
HUE_JITTER = 0.025


@dataclass(frozen=True)
class ObjectSpec:
    """Where and how one object is drawn (all lengths in output pixels)."""

    colour: str
    shape: str
    cx: float
    cy: float
    radius: float
    angle: float  # radians
    rgb: tuple[int, int, int]


def _jittered_rgb(rng: np.random.Generator, colour: str) -> tuple[int, int, int]:
    """The colour's hue, jittered, at a random saturation and brightness."""
    hue = (COLOURS[colour] + rng.uniform(-HUE_JITTER, HUE_JITTER)) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, rng.uniform(0.6, 1.0), rng.uniform(0.65, 1.0))
    return int(r * 255), int(g * 255), int(b * 255)


def _regular_polygon(cx: float, cy: float, r: float, n: int, angle: float) -> list[tuple[float, float]]:
    return [(cx + r * math.cos(angle + 2 * math.pi * k / n), cy + r * math.sin(angle + 2 * math.pi * k / n))
            for k in range(n)]


def _star(cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    points = []
    for k in range(10):
        rk = r if k % 2 == 0 else 0.45 * r
        a = angle + math.pi * k / 5
        points.append((cx + rk * math.cos(a), cy + rk * math.sin(a)))
    return points


def _cross(cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    t = 0.36 * r  # half arm thickness
    outline = [(t, r), (t, t), (r, t), (r, -t), (t, -t), (t, -r),
               (-t, -r), (-t, -t), (-r, -t), (-r, t), (-t, t), (-t, r)]
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in outline]


def shape_mask(shape: str, size: int, cx: float, cy: float, r: float, angle: float) -> Image.Image:
    """A binary ``L`` mask (0/255) of ``shape`` on a ``size``×``size`` canvas."""
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
    elif shape == "triangle":
        draw.polygon(_regular_polygon(cx, cy, r * 1.1, 3, angle), fill=255)
    elif shape == "square":
        draw.polygon(_regular_polygon(cx, cy, r * 1.05, 4, angle), fill=255)
    elif shape == "star":
        draw.polygon(_star(cx, cy, r * 1.15, angle), fill=255)
    elif shape == "cross":
        draw.polygon(_cross(cx, cy, r, angle), fill=255)
    elif shape == "crescent":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
        ox, oy = cx + 0.5 * r * math.cos(angle), cy + 0.5 * r * math.sin(angle)
        rr = 0.85 * r
        draw.ellipse((ox - rr, oy - rr, ox + rr, oy + rr), fill=0)
    else:
        raise ValueError(f"Unknown shape {shape!r}; expected one of {SHAPES}")
    return mask


def _background(rng: np.random.Generator, domain: str, size: int) -> np.ndarray:
    """Float RGB background in [0, 255], shape [size, size, 3]."""
    if domain == "sketch":  # paper
        base = rng.uniform(225, 250)
        return np.full((size, size, 3), base) + rng.normal(0, 4, (size, size, 1))
    if domain == "cartoon":  # flat pastel
        hue = rng.uniform()
        rgb = colorsys.hsv_to_rgb(hue, rng.uniform(0.1, 0.35), rng.uniform(0.8, 1.0))
        return np.broadcast_to(np.array(rgb) * 255, (size, size, 3)).copy()
    # photo and painting: a muted gradient between two colours, plus texture noise
    c0 = np.array(colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0, 0.35), rng.uniform(0.3, 0.9))) * 255
    c1 = np.array(colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0, 0.35), rng.uniform(0.3, 0.9))) * 255
    theta = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:size, 0:size] / size
    t = np.clip(0.5 + (xx - 0.5) * math.cos(theta) + (yy - 0.5) * math.sin(theta), 0, 1)[..., None]
    noise_scale = 10 if domain == "photo" else 25
    return c0 * (1 - t) + c1 * t + rng.normal(0, noise_scale, (size, size, 1))


def _object_layer(rng: np.random.Generator, domain: str, obj: ObjectSpec, size: int) -> np.ndarray:
    """Float RGB fill for ``obj`` over the whole canvas (the mask decides where it shows)."""
    rgb = np.array(obj.rgb, dtype=np.float64)
    if domain == "photo":  # directional shading and fine texture
        theta = rng.uniform(0, 2 * math.pi)
        yy, xx = np.mgrid[0:size, 0:size] / size
        shade = 1.0 + 0.35 * ((xx - obj.cx * SUPERSAMPLE / size) * math.cos(theta)
                              + (yy - obj.cy * SUPERSAMPLE / size) * math.sin(theta)) * 4
        shade = np.clip(shade, 0.55, 1.3)[..., None]
        return rgb * shade + rng.normal(0, 8, (size, size, 1))
    if domain == "painting":  # uneven pigment
        return rgb + rng.normal(0, 22, (size, size, 3))
    return np.broadcast_to(rgb, (size, size, 3)).copy()


def _outline(obj: ObjectSpec, size: int, width: float) -> Image.Image:
    """A band about ``2 * width`` canvas pixels wide along the object's boundary.

    Drawn as the shape grown by ``width`` minus the shape shrunk by ``width``: two polygon fills,
    much cheaper than morphological filters on the supersampled canvas.
    """
    s = SUPERSAMPLE
    outer = shape_mask(obj.shape, size, obj.cx * s, obj.cy * s, obj.radius * s + width, obj.angle)
    inner = shape_mask(obj.shape, size, obj.cx * s, obj.cy * s, max(obj.radius * s - width, 0.0), obj.angle)
    return ImageChops.subtract(outer, inner)


def _paint_object(canvas: np.ndarray, rng: np.random.Generator, domain: str, obj: ObjectSpec) -> np.ndarray:
    size = canvas.shape[0]
    if domain == "sketch":
        # coloured-pencil outline only: the shape and its colour survive, the fill does not
        stroke = _outline(obj, size, width=rng.uniform(1.5, 3.0))
        alpha = np.asarray(stroke, dtype=np.float64)[..., None] / 255 * rng.uniform(0.7, 1.0)
        pencil = np.array(obj.rgb, dtype=np.float64) * rng.uniform(0.75, 1.0)
        return canvas * (1 - alpha) + pencil * alpha
    s = SUPERSAMPLE
    mask = shape_mask(obj.shape, size, obj.cx * s, obj.cy * s, obj.radius * s, obj.angle)
    alpha = np.asarray(mask, dtype=np.float64)[..., None] / 255
    canvas = canvas * (1 - alpha) + _object_layer(rng, domain, obj, size) * alpha
    if domain == "cartoon":  # thick dark outline
        line = np.asarray(_outline(obj, size, width=3.0), dtype=np.float64)[..., None] / 255
        canvas = canvas * (1 - line) + 20.0 * line
    return canvas


def sample_object(rng: np.random.Generator, colour: str, shape: str, radius: float, image_size: int,
                  ) -> ObjectSpec:
    """Place an object of ``radius`` fully inside the image at a random position and angle."""
    margin = radius + 1
    cx = rng.uniform(margin, image_size - margin)
    cy = rng.uniform(margin, image_size - margin)
    return ObjectSpec(colour, shape, cx, cy, radius, rng.uniform(0, 2 * math.pi), _jittered_rgb(rng, colour))


def render_scene(rng: np.random.Generator, colour: str, shape: str, domain: str, image_size: int = 32,
                 ) -> tuple[Image.Image, dict]:
    """Render the main object (``colour`` ``shape``) with 0–2 smaller distractors in ``domain``.

    Returns the RGB image and its attributes (domain, colour, shape, size word, distractors).
    """
    if domain not in DOMAINS:
        raise ValueError(f"Unknown domain {domain!r}; expected one of {DOMAINS}")
    size = image_size * SUPERSAMPLE
    canvas = _background(rng, domain, size)
    radius = rng.uniform(0.2, 0.36) * image_size
    others = [(c, s) for c in COLOURS for s in SHAPES if c != colour and s != shape]
    distractors = []
    for _ in range(int(rng.integers(0, 3))):
        c, s = others[int(rng.integers(len(others)))]
        # distractors are clearly smaller so that "the" object of the caption is well defined
        d = sample_object(rng, c, s, radius * rng.uniform(0.35, 0.55), image_size)
        canvas = _paint_object(canvas, rng, domain, d)
        distractors.append({"colour": c, "shape": s})
    main = sample_object(rng, colour, shape, radius, image_size)
    canvas = _paint_object(canvas, rng, domain, main)
    image = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8), "RGB")
    if domain == "painting":  # soft brush: blur the whole canvas
        image = image.filter(ImageFilter.GaussianBlur(radius=rng.uniform(2.0, 4.0)))
    image = image.resize((image_size, image_size), Image.Resampling.BOX)
    attrs = {
        "domain": domain,
        "colour": colour,
        "shape": shape,
        "size": "large" if radius > 0.3 * image_size else ("small" if radius < 0.25 * image_size else "medium"),
        "rgb": list(main.rgb),
        "distractors": distractors,
    }
    return image, attrs


DOMAIN_NOUNS = {"photo": "photo", "sketch": "sketch", "painting": "painting", "cartoon": "cartoon"}


def caption_for(attrs: dict, with_size: bool) -> str:
    """The caption of an image: "a sketch of a red star" (optionally "a sketch of a small red star")."""
    size = f"{attrs['size']} " if with_size and attrs["size"] != "medium" else ""
    return f"a {DOMAIN_NOUNS[attrs['domain']]} of a {size}{attrs['colour']} {attrs['shape']}"
