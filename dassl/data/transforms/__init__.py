"""``dassl.data.transforms``."""
from .transforms import AVAILABLE_TRANSFORMS, INTERPOLATION_MODES, build_transform, to_tensor

__all__ = ["AVAILABLE_TRANSFORMS", "INTERPOLATION_MODES", "build_transform", "to_tensor"]
