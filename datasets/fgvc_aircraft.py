"""FGVC-Aircraft 2013b (its ``data/`` folder renamed ``fgvc_aircraft``; read from the txt files)."""
import os.path as osp

from dassl.data.datasets import DATASET_REGISTRY

from .base import BenchmarkDataset, first_missing_file

SPLIT_FILES = {"train": "images_variant_train.txt", "val": "images_variant_val.txt",
               "test": "images_variant_test.txt"}


@DATASET_REGISTRY.register()
class FGVCAircraft(BenchmarkDataset):
    """100 aircraft variants; label = line index in ``variants.txt``."""

    template = "a photo of a {}, a type of aircraft."  # zero-shot prompt (CoOp's)
    dataset_dir = "fgvc_aircraft"
    short_name = "fgvc_aircraft"
    image_dir = "images"
    required_paths = ("images", "variants.txt", *SPLIT_FILES.values())

    def read_splits(self):
        variants = [line for _, line in self.read_text_lines(osp.join(self.dataset_dir, "variants.txt"))]
        label_of = {variant: label for label, variant in enumerate(variants)}
        return tuple(self.to_datums(self._entries(self.dataset_dir, f, label_of), source=f) for f in SPLIT_FILES.values())

    def _entries(self, dataset_dir: str, filename: str, label_of: dict):
        path = osp.join(dataset_dir, filename)
        for n, line in self.read_text_lines(path):
            image_id, _, variant = line.partition(" ")
            if variant not in label_of:
                raise self.content_error(path, f'line {n}: variant "{variant}" is not in variants.txt')
            yield osp.join(dataset_dir, "images", f"{image_id}.jpg"), label_of[variant], variant

    @classmethod
    def first_missing_image(cls, dataset_dir: str):
        paths = []
        for filename in SPLIT_FILES.values():
            with open(osp.join(dataset_dir, filename)) as f:
                paths += [osp.join(dataset_dir, "images", line.split(" ")[0] + ".jpg") for line in f if line.strip()]
        return first_missing_file(paths)
