"""Food-101 (CoOp layout: ``food-101/images/<class>/`` + ``split_zhou_Food101.json``)."""
from dassl.data.datasets import DATASET_REGISTRY

from .base import BenchmarkDataset


@DATASET_REGISTRY.register()
class Food101(BenchmarkDataset):
    """101 food dishes."""

    template = "a photo of {}, a type of food."  # zero-shot prompt (CoOp's)
    dataset_dir = "food-101"
    short_name = "food101"
    image_dir = "images"
    split_file = "split_zhou_Food101.json"
    required_paths = ("images",)
    raw_split_paths = ()

    def build_split(self):
        return self.read_and_split_data(self.image_dir)
