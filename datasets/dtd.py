"""Describable Textures (CoOp layout: ``dtd/images/<texture>/`` + ``split_zhou_DescribableTextures.json``)."""
from dassl.data.datasets import DATASET_REGISTRY

from .base import BenchmarkDataset


@DATASET_REGISTRY.register()
class DescribableTextures(BenchmarkDataset):
    """47 texture categories."""

    template = "{} texture."  # zero-shot prompt (CoOp's)
    dataset_dir = "dtd"
    short_name = "dtd"
    image_dir = "images"
    split_file = "split_zhou_DescribableTextures.json"
    required_paths = ("images",)
    raw_split_paths = ()

    def build_split(self):
        return self.read_and_split_data(self.image_dir)
