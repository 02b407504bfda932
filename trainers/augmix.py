"""AugMix as the public GOPro code samples it (TPT-style), built from torchvision's functional ops.

Each op draws a continuous level uniform in [MIN_LEVEL, severity] and acts with level / MAX_LEVEL of its full
strength (integer strengths truncated, signed ops with a random sign); ``width`` chains of ``depth`` ops are mixed
with Dirichlet weights and the result with the input by a Beta draw. torchvision's ``v2.AugMix`` is not this: it
picks a magnitude bin ``randint(severity)``, so at severity 1 the geometric and solarize ops do nothing.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

__all__ = ["AUGMIX_OPS", "MAX_SEVERITY", "AugMix", "apply_op", "mix", "sample_magnitude", "sample_mixing"]

MIN_LEVEL = 0.1  # levels are uniform in [MIN_LEVEL, severity]
MAX_LEVEL = 10  # the level at which an op acts with its full strength; also the largest severity
MAX_SEVERITY = MAX_LEVEL


def _scaled_int(level: float, strength: float) -> int:
    return int(level * strength / MAX_LEVEL)


def _scaled_float(level: float, strength: float) -> float:
    return level * strength / MAX_LEVEL


class _Op(NamedTuple):
    """How an op turns a level into the parameter it applies, and whether that parameter gets a random sign."""

    parameter: Callable[[float, int, int], float] | None  # (level, height, width) -> degrees, pixels, ...
    signed: bool


# Full strengths at level 10: rotation 30 degrees, shear factor 0.3, translation a third of the side, solarize
# threshold lowered by 256, posterize down by 4 bits from 4. The shears and translations map output pixel (x, y)
# to input (x + s*y, y), (x, y + s*x), (x + t, y), (x, y + t): about the top-left corner, as the public code's.
_OPS: dict[str, _Op] = {
    "autocontrast": _Op(None, False),
    "equalize": _Op(None, False),
    "posterize": _Op(lambda level, h, w: 4 - _scaled_int(level, 4), False),  # bits kept
    "rotate": _Op(lambda level, h, w: _scaled_int(level, 30), True),  # degrees, counter-clockwise
    "solarize": _Op(lambda level, h, w: 256 - _scaled_int(level, 256), False),  # threshold
    "shear_x": _Op(lambda level, h, w: _scaled_float(level, 0.3), True),  # shear factor
    "shear_y": _Op(lambda level, h, w: _scaled_float(level, 0.3), True),
    "translate_x": _Op(lambda level, h, w: _scaled_int(level, w / 3), True),  # pixels
    "translate_y": _Op(lambda level, h, w: _scaled_int(level, h / 3), True),
}
AUGMIX_OPS = tuple(_OPS)


def sample_magnitude(name: str, severity: float, height: int, width: int) -> float | None:
    """The parameter op ``name`` applies for one draw at ``severity`` (None for the parameterless ops)."""
    op = _OPS[name]
    if op.parameter is None:
        return None
    level = MIN_LEVEL + (severity - MIN_LEVEL) * torch.rand(()).item()
    value = op.parameter(level, height, width)
    if op.signed and torch.rand(()).item() < 0.5:
        value = -value
    return value


def _shear_degrees(factor: float) -> float:
    return math.degrees(math.atan(factor))


def apply_op(image, name: str, magnitude: float | None):
    """Apply op ``name`` with the parameter of ``sample_magnitude`` to a PIL image or uint8 tensor [C, H, W]."""
    bilinear, corner = InterpolationMode.BILINEAR, [0.0, 0.0]
    if name == "autocontrast":
        return F.autocontrast(image)
    if name == "equalize":
        return F.equalize(image)
    if name == "posterize":
        return F.posterize(image, int(magnitude))
    if name == "solarize":
        return F.solarize(image, magnitude)
    if name == "rotate":
        return F.rotate(image, magnitude, interpolation=bilinear)
    if name in ("shear_x", "shear_y"):
        shear = [_shear_degrees(magnitude), 0.0] if name == "shear_x" else [0.0, _shear_degrees(magnitude)]
        return F.affine(image, 0.0, [0, 0], 1.0, shear, interpolation=bilinear, center=corner)
    if name in ("translate_x", "translate_y"):
        # torchvision moves content by +t; the public op samples input x + t, i.e. moves it by -t.
        shift = [-magnitude, 0] if name == "translate_x" else [0, -magnitude]
        return F.affine(image, 0.0, shift, 1.0, [0.0, 0.0], interpolation=bilinear, center=corner)
    raise ValueError(f"unknown AugMix op {name!r}; valid: {', '.join(AUGMIX_OPS)}")


def sample_mixing(width: int, alpha: float) -> tuple[Tensor, float]:
    """Chain weights ~ Dirichlet(alpha, ..., alpha) [width] and the chains' share m ~ Beta(alpha, alpha)."""
    concentration = torch.full((width,), float(alpha))
    weights = torch.distributions.Dirichlet(concentration).sample()
    m = torch.distributions.Beta(float(alpha), float(alpha)).sample().item()
    return weights, m


def mix(image: Tensor, chains: Sequence[Tensor], weights: Tensor, m: float) -> Tensor:
    """(1 - m) * image + m * sum_i weights_i * chains_i (Beta(a, a) is symmetric, so m's side is immaterial)."""
    mixed = sum(w * c for w, c in zip(weights.tolist(), chains))
    return (1 - m) * image + m * mixed


def _to_float(image) -> Tensor:
    return F.to_dtype(F.to_image(image), torch.float32, scale=True).as_subclass(Tensor)


class AugMix(nn.Module):
    """PIL image or uint8 tensor -> float tensor [C, H, W] in [0, 1]: the public code's AugMix of the input."""

    def __init__(
        self,
        severity: int = 1,
        width: int = 3,
        depth: tuple[int, int] = (1, 3),
        alpha: float = 1.0,
        ops: Sequence[str] = AUGMIX_OPS,
    ):
        super().__init__()
        unknown = [op for op in ops if op not in _OPS]
        if unknown or not ops:
            raise ValueError(f"AugMix ops {list(ops)}: need a non-empty subset of {', '.join(AUGMIX_OPS)}")
        if not MIN_LEVEL < severity <= MAX_SEVERITY:
            raise ValueError(f"AugMix severity is {severity}; valid: 1 to {MAX_SEVERITY}")
        if width < 1 or not 1 <= depth[0] <= depth[1] or alpha <= 0:
            raise ValueError(f"AugMix needs width >= 1, 1 <= depth[0] <= depth[1], alpha > 0; got {width}, "
                             f"{tuple(depth)}, {alpha}")
        self.severity = severity
        self.width = width
        self.depth = (int(depth[0]), int(depth[1]))
        self.alpha = alpha
        self.ops = tuple(ops)

    def sample_chain(self, height: int, width: int) -> list[tuple[str, float | None]]:
        """One chain: depth uniform in the configured range, ops uniform with replacement, their parameters."""
        depth = int(torch.randint(self.depth[0], self.depth[1] + 1, ()).item())
        names = [self.ops[int(i)] for i in torch.randint(len(self.ops), (depth,))]
        return [(name, sample_magnitude(name, self.severity, height, width)) for name in names]

    def apply_chain(self, image, chain: Sequence[tuple[str, float | None]]):
        for name, magnitude in chain:
            image = apply_op(image, name, magnitude)
        return image

    def forward(self, image) -> Tensor:
        height, width = F.get_size(image)
        chains = [_to_float(self.apply_chain(image, self.sample_chain(height, width))) for _ in range(self.width)]
        weights, m = sample_mixing(self.width, self.alpha)
        return mix(_to_float(image), chains, weights, m)
