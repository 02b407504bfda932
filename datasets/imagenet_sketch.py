"""ImageNet-Sketch (``imagenet-sketch/images/<wnid>/`` + ImageNet's ``classnames.txt``)."""
from dassl.data.datasets import DATASET_REGISTRY

from .imagenet import ImageNetVariant


@DATASET_REGISTRY.register()
class ImageNetSketch(ImageNetVariant):
    """Sketches of the ImageNet classes; evaluation only."""

    template = "a photo of a {}."  # zero-shot prompt (CoOp's)
    dataset_dir = "imagenet-sketch"
    short_name = "imagenet_sketch"
    image_dir = "images"
    required_paths = ("images", "classnames.txt")
