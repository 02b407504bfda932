"""Oxford 102 Flowers (CoOp layout: ``oxford_flowers/jpg`` + ``split_zhou_OxfordFlowers.json``)."""
import os.path as osp
import random
from collections import defaultdict

from dassl.data.datasets import DATASET_REGISTRY, Datum
from dassl.utils import read_json

from .base import BenchmarkDataset


@DATASET_REGISTRY.register()
class OxfordFlowers(BenchmarkDataset):
    """102 flower species."""

    template = "a photo of a {}, a type of flower."  # zero-shot prompt (CoOp's)
    dataset_dir = "oxford_flowers"
    short_name = "oxford_flowers"
    image_dir = "jpg"
    split_file = "split_zhou_OxfordFlowers.json"
    required_paths = ("jpg",)
    raw_split_paths = ("imagelabels.mat", "cat_to_name.json")

    def build_split(self, p_trn: float = 0.5, p_val: float = 0.2):
        """Per class: shuffle, then 50% train / 20% val / rest test (labels from ``imagelabels.mat``)."""
        from scipy.io import loadmat  # only needed when the split JSON is absent

        labels = loadmat(osp.join(self.dataset_dir, "imagelabels.mat"))["labels"][0]
        names_path = osp.join(self.dataset_dir, "cat_to_name.json")
        label_to_name = read_json(names_path)
        paths_by_label = defaultdict(list)
        for index, label in enumerate(labels):
            paths_by_label[int(label)].append(osp.join(self.image_dir, f"image_{index + 1:05d}.jpg"))
        self.require_files((p for paths in paths_by_label.values() for p in paths), source="imagelabels.mat")

        train, val, test = [], [], []
        for label, paths in paths_by_label.items():
            if str(label) not in label_to_name:
                raise self.content_error(names_path, f'no name for class "{label}"')
            random.shuffle(paths)
            n_train, n_val = round(len(paths) * p_trn), round(len(paths) * p_val)
            if n_train < 1 or n_val < 1 or len(paths) - n_train - n_val < 1:
                raise self.content_error("imagelabels.mat", f"class {label} has {len(paths)} images, too few to split")
            name = label_to_name[str(label)]
            for part, chunk in ((train, paths[:n_train]), (val, paths[n_train:n_train + n_val]),
                                (test, paths[n_train + n_val:])):
                part.extend(Datum.from_verified(impath=p, label=label - 1, classname=name) for p in chunk)
        return train, val, test
