"""GOPro's augmented views, made in the data pipeline from the decoded image (DESIGN.md decision 4)."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torchvision.transforms import v2

__all__ = ["VIEW_KEYS", "moco_view", "augmix_view", "build_view_transforms"]

VIEW_KEYS = ("img", "img_moco", "img_augmix")
_INTERPOLATIONS = {
    "bilinear": v2.InterpolationMode.BILINEAR,
    "bicubic": v2.InterpolationMode.BICUBIC,
    "nearest": v2.InterpolationMode.NEAREST,
}


def _image_size(cfg) -> tuple[int, int]:
    return tuple(int(s) for s in cfg.INPUT.SIZE)


def _interpolation(cfg) -> v2.InterpolationMode:
    name = cfg.INPUT.INTERPOLATION
    if name not in _INTERPOLATIONS:
        raise ValueError(f"INPUT.INTERPOLATION is {name!r}; valid: {', '.join(_INTERPOLATIONS)}")
    return _INTERPOLATIONS[name]


def _to_normalised_tensor(cfg) -> list[Callable]:
    return [
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=list(cfg.INPUT.PIXEL_MEAN), std=list(cfg.INPUT.PIXEL_STD)),
    ]


def _blur_kernel(size: tuple[int, int]) -> int:
    """An odd kernel about 10% of the image side (MoCo v3 / SimCLR recipe)."""
    return max(3, int(0.1 * min(size)) // 2 * 2 + 1)


def moco_view(cfg) -> v2.Compose:
    """MoCo-v3 view: strong crop, colour jitter, grayscale, blur, flip, CLIP normalisation."""
    size = _image_size(cfg)
    return v2.Compose([
        v2.RandomResizedCrop(size, scale=(0.08, 1.0), interpolation=v2.InterpolationMode.BICUBIC),
        v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),
        v2.RandomGrayscale(p=0.2),
        v2.GaussianBlur(_blur_kernel(size), sigma=(0.1, 2.0)),
        v2.RandomHorizontalFlip(),
        *_to_normalised_tensor(cfg),
    ])


def augmix_view(cfg) -> v2.Compose:
    """AugMix view: random resized crop and flip, then torchvision's AugMix on the pixels."""
    return v2.Compose([
        v2.RandomResizedCrop(_image_size(cfg), interpolation=_interpolation(cfg)),
        v2.RandomHorizontalFlip(),
        v2.AugMix(severity=1, all_ops=False),  # the public code: severity 1, geometric + tone ops only
        *_to_normalised_tensor(cfg),
    ])


def build_view_transforms(cfg, keys: Sequence[str] = VIEW_KEYS) -> dict[str, Callable]:
    """A dict transform for DatasetWrapper: ``img`` is the config's standard train view."""
    from dassl.data.transforms import build_transform

    builders = {"img": lambda c: build_transform(c, is_train=True), "img_moco": moco_view, "img_augmix": augmix_view}
    unknown = [k for k in keys if k not in builders]
    if unknown:
        raise ValueError(f"unknown view keys {unknown}; valid: {', '.join(VIEW_KEYS)}")
    return {key: builders[key](cfg) for key in keys}
