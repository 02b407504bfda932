"""SUN397 (CoOp layout: ``sun397/SUN397/<letter>/<scene>/`` + ``split_zhou_SUN397.json``)."""
import os.path as osp

from dassl.data.datasets import DATASET_REGISTRY

from .base import BenchmarkDataset


@DATASET_REGISTRY.register()
class SUN397(BenchmarkDataset):
    """397 scene categories."""

    template = "a photo of a {}."  # zero-shot prompt (CoOp's)
    dataset_dir = "sun397"
    short_name = "sun397"
    image_dir = "SUN397"
    split_file = "split_zhou_SUN397.json"
    required_paths = ("SUN397",)
    raw_split_paths = ("ClassName.txt", "Training_01.txt", "Testing_01.txt")

    def build_split(self):
        path = osp.join(self.dataset_dir, "ClassName.txt")
        folders = [line.lstrip("/") for _, line in self.read_text_lines(path)]
        label_of = {folder: label for label, folder in enumerate(folders)}
        trainval = self.read_image_list("Training_01.txt", label_of)
        test = self.read_image_list("Testing_01.txt", label_of)
        train, val = self.split_trainval(trainval)
        return train, val, test

    def read_image_list(self, filename: str, label_of: dict):
        """Lines ``/<letter>/<scene>[/<sub>]/<image>``; the name drops the letter and reverses the parts."""
        path = osp.join(self.dataset_dir, filename)
        entries = []
        for n, line in self.read_text_lines(path):
            rel = line.lstrip("/")
            folder = osp.dirname(rel)
            if folder not in label_of:
                raise self.content_error(path, f'line {n}: scene "{folder}" is not in ClassName.txt')
            # "b/bakery/shop" -> "shop bakery": indoor/outdoor-like qualifiers come first.
            classname = " ".join(reversed(folder.split("/")[1:]))
            entries.append((osp.join(self.image_dir, rel), label_of[folder], classname))
        return self.to_datums(entries, source=path)
