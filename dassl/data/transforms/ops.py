"""Image operations torchvision does not provide, in Dassl's semantics.

They draw from torch's global generator, as torchvision's transforms do; in a seeded run's training
``DatasetWrapper`` seeds it per sample (``dassl.data.sample_rng``).
"""
from __future__ import annotations

import torch
from PIL import Image
from torchvision.transforms import InterpolationMode, v2

__all__ = ["Random2DTranslation", "Cutout", "GaussianNoise", "InstanceNormalization", "RandomMagnitudeRandAugment"]


def _coin(p: float) -> bool:
    return torch.rand(()).item() < p


class Random2DTranslation(torch.nn.Module):
    """With probability ``p`` enlarge to 1.125x and crop ``(height, width)`` at random; else resize."""

    def __init__(self, height: int, width: int, p: float = 0.5, interpolation=InterpolationMode.BILINEAR):
        super().__init__()
        self.size = (height, width)
        self.p = p
        self.interpolation = interpolation

    def forward(self, img: Image.Image) -> Image.Image:
        if not _coin(self.p):
            return v2.functional.resize(img, list(self.size), interpolation=self.interpolation)
        height, width = self.size
        big = [round(height * 1.125), round(width * 1.125)]
        img = v2.functional.resize(img, big, interpolation=self.interpolation)
        top = int(torch.randint(0, big[0] - height + 1, ()).item())
        left = int(torch.randint(0, big[1] - width + 1, ()).item())
        return v2.functional.crop(img, top, left, height, width)


class Cutout(torch.nn.Module):
    """Zero ``n_holes`` squares of side ``length`` at random centres (clipped to the image)."""

    def __init__(self, n_holes: int = 1, length: int = 16):
        super().__init__()
        self.n_holes = n_holes
        self.length = length

    def forward(self, img: torch.Tensor) -> torch.Tensor:  # [C, H, W]
        h, w = img.shape[-2:]
        mask = torch.ones(h, w, dtype=img.dtype)
        half = self.length // 2
        for _ in range(self.n_holes):
            y = int(torch.randint(0, h, ()).item())
            x = int(torch.randint(0, w, ()).item())
            mask[max(0, y - half) : min(h, y + half), max(0, x - half) : min(w, x + half)] = 0
        return img * mask


class GaussianNoise(torch.nn.Module):
    """With probability ``p`` add N(mean, std) noise to a tensor image."""

    def __init__(self, mean: float = 0.0, std: float = 0.15, p: float = 0.5):
        super().__init__()
        self.mean = mean
        self.std = std
        self.p = p

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        if not _coin(self.p):
            return img
        return img + torch.randn_like(img) * self.std + self.mean


class InstanceNormalization(torch.nn.Module):
    """Standardise each channel of one image to zero mean and unit std."""

    def forward(self, img: torch.Tensor) -> torch.Tensor:  # [C, H, W]
        mean = img.mean(dim=(-2, -1), keepdim=True)
        std = img.std(dim=(-2, -1), keepdim=True)
        return (img - mean) / (std + 1e-8)


class RandomMagnitudeRandAugment(torch.nn.Module):
    """RandAugment with ``n`` ops whose magnitude is drawn anew for every image (FixMatch style)."""

    def __init__(self, n: int = 2, num_magnitude_bins: int = 31):
        super().__init__()
        self.n = n
        self.num_magnitude_bins = num_magnitude_bins

    def forward(self, img):
        magnitude = int(torch.randint(0, self.num_magnitude_bins, ()).item())
        return v2.RandAugment(num_ops=self.n, magnitude=magnitude, num_magnitude_bins=self.num_magnitude_bins)(img)
