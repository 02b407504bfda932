"""ImageNet-R (``imagenet-rendition/imagenet-r/<wnid>/`` + ImageNet's ``classnames.txt``)."""
from dassl.data.datasets import DATASET_REGISTRY

from .imagenet import ImageNetVariant


@DATASET_REGISTRY.register()
class ImageNetR(ImageNetVariant):
    """Renditions (art, cartoons, ...) of a subset of the classes (labels 0..K-1 over its own folders)."""

    template = "a photo of a {}."  # zero-shot prompt (CoOp's)
    dataset_dir = "imagenet-rendition"
    short_name = "imagenet_r"
    image_dir = "imagenet-r"
    required_paths = ("imagenet-r", "classnames.txt")
