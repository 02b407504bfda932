"""ImageNet-A (``imagenet-adversarial/imagenet-a/<wnid>/`` + ImageNet's ``classnames.txt``)."""
from dassl.data.datasets import DATASET_REGISTRY

from .imagenet import ImageNetVariant


@DATASET_REGISTRY.register()
class ImageNetA(ImageNetVariant):
    """Natural adversarial examples of a subset of the classes (labels 0..K-1 over its own folders)."""

    template = "a photo of a {}."  # zero-shot prompt (CoOp's)
    dataset_dir = "imagenet-adversarial"
    short_name = "imagenet_a"
    image_dir = "imagenet-a"
    required_paths = ("imagenet-a", "classnames.txt")
