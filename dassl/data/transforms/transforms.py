"""``build_transform``: Dassl's train / test pipelines on ``torchvision.transforms.v2``.

The order of the steps is fixed here, not by ``INPUT.TRANSFORMS``; each step logs one ``+ ...`` line.
"""
from __future__ import annotations

import logging

import torch
from torchvision.transforms import AutoAugmentPolicy, InterpolationMode, v2

from dassl.utils.errors import ConfigError

from .ops import Cutout, GaussianNoise, InstanceNormalization, Random2DTranslation, RandomMagnitudeRandAugment

__all__ = ["AVAILABLE_TRANSFORMS", "INTERPOLATION_MODES", "build_transform", "to_tensor"]

logger = logging.getLogger(__name__)

AVAILABLE_TRANSFORMS = [
    "random_flip",
    "random_resized_crop",
    "normalize",
    "instance_norm",
    "random_crop",
    "random_translation",
    "center_crop",  # accepted for old configs; the test pipeline always centre-crops
    "cutout",
    "imagenet_policy",
    "cifar10_policy",
    "svhn_policy",
    "randaugment",
    "randaugment_fixmatch",
    "randaugment2",
    "gaussian_noise",
    "colorjitter",
    "randomgrayscale",
    "gaussian_blur",
]

INTERPOLATION_MODES = {
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
    "nearest": InterpolationMode.NEAREST,
}

_POLICIES = {
    "imagenet_policy": AutoAugmentPolicy.IMAGENET,
    "cifar10_policy": AutoAugmentPolicy.CIFAR10,
    "svhn_policy": AutoAugmentPolicy.SVHN,
}


def to_tensor() -> v2.Compose:
    """PIL image -> float tensor in [0, 1] (what ``transforms.ToTensor`` did)."""
    return v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])


def _check_choices(cfg, choices) -> InterpolationMode:
    unknown = [c for c in choices if c not in AVAILABLE_TRANSFORMS]
    if unknown:
        raise ConfigError(f"Unknown transform(s) {unknown} in INPUT.TRANSFORMS; valid choices: {AVAILABLE_TRANSFORMS}")
    if cfg.INPUT.INTERPOLATION not in INTERPOLATION_MODES:
        raise ConfigError(
            f'Unknown INPUT.INTERPOLATION "{cfg.INPUT.INTERPOLATION}"; valid choices: {list(INTERPOLATION_MODES)}'
        )
    return INTERPOLATION_MODES[cfg.INPUT.INTERPOLATION]


def build_transform(cfg, is_train: bool = True, choices=None) -> v2.Compose | None:
    """The train or test pipeline for ``choices`` (default ``cfg.INPUT.TRANSFORMS``); None with NO_TRANSFORM."""
    if cfg.INPUT.NO_TRANSFORM:
        logger.info("Note: no transform is applied!")
        return None
    choices = list(cfg.INPUT.TRANSFORMS if choices is None else choices)
    interpolation = _check_choices(cfg, choices)
    normalize = v2.Normalize(mean=cfg.INPUT.PIXEL_MEAN, std=cfg.INPUT.PIXEL_STD)
    if is_train:
        return _build_train(cfg, choices, interpolation, normalize)
    return _build_test(cfg, choices, interpolation, normalize)


class _Steps:
    """Collects pipeline steps, logging one ``+ ...`` line per step."""

    def __init__(self, title: str):
        logger.info(title)
        self.steps: list = []

    def add(self, line: str, tfm) -> None:
        logger.info(f"+ {line}")
        self.steps.append(tfm)

    def compose(self) -> v2.Compose:
        return v2.Compose([*self.steps, v2.ToPureTensor()])  # plain torch.Tensor out, not tv_tensors.Image


def _build_train(cfg, choices, interpolation, normalize) -> v2.Compose:
    inp = cfg.INPUT
    size = list(inp.SIZE)
    pipeline = _Steps("Building transform_train")
    add = pipeline.add

    if "random_crop" not in choices and "random_resized_crop" not in choices:
        add(f"resize to {size[0]}x{size[1]}", v2.Resize(size, interpolation=interpolation))
    if "random_translation" in choices:
        add("random translation", Random2DTranslation(size[0], size[1], interpolation=interpolation))
    if "random_crop" in choices:
        add(f"random crop (padding = {inp.CROP_PADDING})", v2.RandomCrop(size, padding=inp.CROP_PADDING))
    if "random_resized_crop" in choices:
        scale = tuple(inp.RRCROP_SCALE)
        add(
            f"random resized crop (size={tuple(size)}, scale={scale})",
            v2.RandomResizedCrop(size, scale=scale, interpolation=interpolation),
        )
    if "random_flip" in choices:
        add("random flip", v2.RandomHorizontalFlip())
    for name, policy in _POLICIES.items():
        if name in choices:
            add(f"{name.replace('_', ' ')}", v2.AutoAugment(policy))
    if "randaugment" in choices:
        n, m = inp.RANDAUGMENT_N, inp.RANDAUGMENT_M
        add(f"randaugment (n={n}, m={m})", v2.RandAugment(num_ops=n, magnitude=m))
    for name in ("randaugment_fixmatch", "randaugment2"):
        if name in choices:
            add(f"{name} (n={inp.RANDAUGMENT_N})", RandomMagnitudeRandAugment(inp.RANDAUGMENT_N))
    if "colorjitter" in choices:
        b, c, s, h = inp.COLORJITTER_B, inp.COLORJITTER_C, inp.COLORJITTER_S, inp.COLORJITTER_H
        add(
            f"color jitter (brightness={b}, contrast={c}, saturation={s}, hue={h})",
            v2.ColorJitter(brightness=b, contrast=c, saturation=s, hue=h),
        )
    if "randomgrayscale" in choices:
        add(f"random gray scale (p={inp.RGS_P})", v2.RandomGrayscale(p=inp.RGS_P))
    if "gaussian_blur" in choices:
        add(
            f"gaussian blur (kernel={inp.GB_K}, p={inp.GB_P})",
            v2.RandomApply([v2.GaussianBlur(inp.GB_K)], p=inp.GB_P),
        )
    add("to torch tensor of range [0, 1]", to_tensor())
    if "cutout" in choices:
        add(f"cutout (n_holes={inp.CUTOUT_N}, length={inp.CUTOUT_LEN})", Cutout(inp.CUTOUT_N, inp.CUTOUT_LEN))
    if "normalize" in choices:
        add(f"normalization (mean={inp.PIXEL_MEAN}, std={inp.PIXEL_STD})", normalize)
    if "gaussian_noise" in choices:
        add(f"gaussian noise (mean={inp.GN_MEAN}, std={inp.GN_STD})", GaussianNoise(inp.GN_MEAN, inp.GN_STD))
    if "instance_norm" in choices:
        add("instance normalization", InstanceNormalization())
    return pipeline.compose()


def _build_test(cfg, choices, interpolation, normalize) -> v2.Compose:
    inp = cfg.INPUT
    size = list(inp.SIZE)
    pipeline = _Steps("Building transform_test")
    add = pipeline.add

    add(f"resize the smaller edge to {max(size)}", v2.Resize(max(size), interpolation=interpolation))
    add(f"{size[0]}x{size[1]} center crop", v2.CenterCrop(size))
    add("to torch tensor of range [0, 1]", to_tensor())
    if "normalize" in choices:
        add(f"normalization (mean={inp.PIXEL_MEAN}, std={inp.PIXEL_STD})", normalize)
    if "instance_norm" in choices:
        add("instance normalization", InstanceNormalization())
    return pipeline.compose()
