"""GOPro's augmented views, made in the data pipeline from the decoded image.

Both extra views sample exactly as the public code does; their parameters live under ``INPUT.VIEWS``.
All randomness comes from torch's global generator, which a seeded run's training data pipeline seeds per
sample from (SEED, epoch, sample index), so a sample's views do not depend on the process or worker reading it.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from PIL import Image, ImageFilter
from torch import nn
from torchvision.transforms import v2
from yacs.config import CfgNode as CN

from dassl.config import ConfigError, register_cfg_extension
from dassl.data.transforms import INTERPOLATION_MODES, build_transform, to_tensor

from .augmix import AUGMIX_OPS, MAX_SEVERITY, AugMix

__all__ = ["VIEW_KEYS", "PILGaussianBlur", "moco_view", "augmix_view", "build_view_transforms"]

VIEW_KEYS = ("img", "img_moco", "img_augmix")


@register_cfg_extension
def add_view_config(cfg: CN) -> None:
    """The public code's view parameters (MoCo v3's augmentation and TPT-style AugMix)."""
    cfg.INPUT.VIEWS = CN()
    moco = cfg.INPUT.VIEWS.MOCO = CN()
    moco.CROP_SCALE = (0.08, 1.0)  # RandomResizedCrop area range
    moco.INTERPOLATION = "bilinear"
    moco.COLORJITTER = (0.4, 0.4, 0.2, 0.1)  # brightness, contrast, saturation, hue
    moco.COLORJITTER_P = 0.8
    moco.GRAYSCALE_P = 0.2
    moco.BLUR_SIGMA = (0.1, 2.0)  # uniform range of PIL's Gaussian blur radius (its standard deviation)
    moco.BLUR_P = 1.0
    moco.FLIP_P = 0.5
    augmix = cfg.INPUT.VIEWS.AUGMIX = CN()
    augmix.CROP_SCALE = (0.08, 1.0)  # pre-augmentation: RandomResizedCrop + flip
    augmix.INTERPOLATION = "bilinear"
    augmix.FLIP_P = 0.5
    augmix.SEVERITY = 1  # op levels uniform in [0.1, SEVERITY]; an op acts with level/10 of its full strength
    augmix.WIDTH = 3  # chains
    augmix.DEPTH = (1, 3)  # ops per chain, uniform in this inclusive range
    augmix.ALPHA = 1.0  # chain weights ~ Dirichlet(ALPHA, ...), mixing share ~ Beta(ALPHA, ALPHA)
    augmix.OPS = AUGMIX_OPS


def _require(ok: bool, key: str, value, valid: str) -> None:
    if not ok:
        raise ConfigError(f"INPUT.VIEWS.{key} is {value!r}; valid: {valid}")


def _probability(node: CN, name: str, key: str) -> float:
    p = node[name]
    _require(isinstance(p, (int, float)) and 0 <= p <= 1, f"{key}.{name}", p, "a probability in [0, 1]")
    return float(p)


def _interval(node: CN, name: str, key: str, low: float, high: float) -> tuple[float, float]:
    pair = tuple(node[name])
    ok = len(pair) == 2 and low < pair[0] <= pair[1] <= high
    _require(ok, f"{key}.{name}", pair, f"(lo, hi) with {low} < lo <= hi <= {high}")
    return float(pair[0]), float(pair[1])


def _interpolation(node: CN, key: str) -> v2.InterpolationMode:
    name = node.INTERPOLATION
    _require(name in INTERPOLATION_MODES, f"{key}.INTERPOLATION", name, ", ".join(INTERPOLATION_MODES))
    return INTERPOLATION_MODES[name]


def _normalise(cfg) -> list[Callable]:
    return [
        to_tensor(),
        v2.Normalize(mean=list(cfg.INPUT.PIXEL_MEAN), std=list(cfg.INPUT.PIXEL_STD)),
        v2.ToPureTensor(),
    ]


class PILGaussianBlur(nn.Module):
    """PIL's Gaussian blur of a PIL image (the public code's op), sigma uniform in ``sigma`` from torch's RNG.

    PIL blurs with three box passes, so the cost does not grow with sigma (a 23-tap tensor kernel does).
    """

    def __init__(self, sigma: tuple[float, float]):
        super().__init__()
        self.sigma = sigma

    def sample_sigma(self) -> float:
        low, high = self.sigma
        return low + (high - low) * torch.rand(()).item()

    def forward(self, image: Image.Image) -> Image.Image:
        if not isinstance(image, Image.Image):
            raise TypeError(f"PILGaussianBlur takes a PIL image (the decoded file), got {type(image).__name__}")
        return image.filter(ImageFilter.GaussianBlur(radius=self.sample_sigma()))


def moco_view(cfg) -> v2.Compose:
    """MoCo-v3 view: crop, colour jitter, grayscale, blur, flip on the pixels, then the config's normalisation."""
    node, key = cfg.INPUT.VIEWS.MOCO, "MOCO"
    jitter = tuple(node.COLORJITTER)
    _require(len(jitter) == 4 and min(jitter) >= 0 and jitter[3] <= 0.5, "MOCO.COLORJITTER", jitter,
             "(brightness, contrast, saturation, hue), all >= 0, hue <= 0.5")
    return v2.Compose([
        v2.RandomResizedCrop(
            tuple(cfg.INPUT.SIZE), scale=_interval(node, "CROP_SCALE", key, 0, 1), interpolation=_interpolation(node, key)
        ),
        v2.RandomApply([v2.ColorJitter(*jitter)], p=_probability(node, "COLORJITTER_P", key)),
        v2.RandomGrayscale(p=_probability(node, "GRAYSCALE_P", key)),
        v2.RandomApply([PILGaussianBlur(_interval(node, "BLUR_SIGMA", key, 0, float("inf")))],
                       p=_probability(node, "BLUR_P", key)),
        v2.RandomHorizontalFlip(p=_probability(node, "FLIP_P", key)),
        *_normalise(cfg),
    ])


def augmix_view(cfg) -> v2.Compose:
    """AugMix view: random resized crop and flip, then the public code's AugMix, then the normalisation."""
    node, key = cfg.INPUT.VIEWS.AUGMIX, "AUGMIX"
    severity, depth, ops = node.SEVERITY, tuple(node.DEPTH), tuple(node.OPS)
    _require(isinstance(severity, int) and 1 <= severity <= MAX_SEVERITY, "AUGMIX.SEVERITY", severity,
             f"an integer from 1 to {MAX_SEVERITY}")
    _require(node.WIDTH >= 1, "AUGMIX.WIDTH", node.WIDTH, "an integer >= 1")
    _require(len(depth) == 2 and 1 <= depth[0] <= depth[1], "AUGMIX.DEPTH", depth, "(lo, hi) with 1 <= lo <= hi")
    _require(node.ALPHA > 0, "AUGMIX.ALPHA", node.ALPHA, "a number > 0")
    _require(bool(ops) and set(ops) <= set(AUGMIX_OPS), "AUGMIX.OPS", ops, f"a subset of {', '.join(AUGMIX_OPS)}")
    return v2.Compose([
        v2.RandomResizedCrop(
            tuple(cfg.INPUT.SIZE), scale=_interval(node, "CROP_SCALE", key, 0, 1), interpolation=_interpolation(node, key)
        ),
        v2.RandomHorizontalFlip(p=_probability(node, "FLIP_P", key)),
        AugMix(severity=severity, width=node.WIDTH, depth=depth, alpha=node.ALPHA, ops=ops),
        v2.Normalize(mean=list(cfg.INPUT.PIXEL_MEAN), std=list(cfg.INPUT.PIXEL_STD)),
    ])


def build_view_transforms(cfg, keys: Sequence[str] = VIEW_KEYS) -> dict[str, Callable]:
    """A dict transform for DatasetWrapper: ``img`` is the config's standard train view."""
    builders = {"img": lambda c: build_transform(c, is_train=True), "img_moco": moco_view, "img_augmix": augmix_view}
    unknown = [k for k in keys if k not in builders]
    if unknown:
        raise ValueError(f"unknown view keys {unknown}; valid: {', '.join(VIEW_KEYS)}")
    return {key: builders[key](cfg) for key in keys}
