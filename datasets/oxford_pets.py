"""Oxford-IIIT Pets (CoOp layout: ``oxford_pets/images`` + ``split_zhou_OxfordPets.json``)."""
import os.path as osp

from dassl.data.datasets import DATASET_REGISTRY

from .base import BenchmarkDataset


@DATASET_REGISTRY.register()
class OxfordPets(BenchmarkDataset):
    """37 cat and dog breeds."""

    template = "a photo of a {}, a type of pet."  # zero-shot prompt (CoOp's)
    dataset_dir = "oxford_pets"
    short_name = "oxford_pets"
    image_dir = "images"
    split_file = "split_zhou_OxfordPets.json"
    required_paths = ("images",)
    raw_split_paths = ("annotations/trainval.txt", "annotations/test.txt")

    def build_split(self):
        trainval = self.read_annotations("trainval.txt")
        test = self.read_annotations("test.txt")
        train, val = self.split_trainval(trainval)
        return train, val, test

    def read_annotations(self, filename: str):
        """Lines ``<image stem> <class id from 1> <species> <breed id>``; the breed is the stem minus its number."""
        path = osp.join(self.dataset_dir, "annotations", filename)
        entries = []
        for n, line in self.read_text_lines(path):
            fields = line.split(" ")
            if len(fields) != 4 or not fields[1].isdigit():
                raise self.content_error(path, f'line {n} "{line}" is not "<image> <class id> <species> <breed id>"')
            stem, label = fields[0], int(fields[1]) - 1
            breed = "_".join(stem.split("_")[:-1]).lower()
            entries.append((osp.join(self.image_dir, stem + ".jpg"), label, breed))
        return self.to_datums(entries, source=path)
