"""Caltech-101 (CoOp layout: ``caltech-101/101_ObjectCategories`` + ``split_zhou_Caltech101.json``)."""
from dassl.data.datasets import DATASET_REGISTRY

from .base import BenchmarkDataset

IGNORED_FOLDERS = ("BACKGROUND_Google", "Faces_easy")  # clutter and a duplicate of Faces
NEW_CLASSNAMES = {"airplanes": "airplane", "Faces": "face", "Leopards": "leopard", "Motorbikes": "motorbike"}


@DATASET_REGISTRY.register()
class Caltech101(BenchmarkDataset):
    """101 object categories, 100 classes after dropping the background folder."""

    template = "a photo of a {}."  # zero-shot prompt (CoOp's)
    dataset_dir = "caltech-101"
    short_name = "caltech101"
    image_dir = "101_ObjectCategories"
    split_file = "split_zhou_Caltech101.json"
    required_paths = ("101_ObjectCategories",)
    raw_split_paths = ()

    def build_split(self):
        return self.read_and_split_data(self.image_dir, ignored=IGNORED_FOLDERS, new_cnames=NEW_CLASSNAMES)
