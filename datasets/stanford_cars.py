"""Stanford Cars (CoOp layout: ``stanford_cars/{cars_train,cars_test}`` + ``split_zhou_StanfordCars.json``)."""
import os.path as osp

from dassl.data.datasets import DATASET_REGISTRY

from .base import BenchmarkDataset


@DATASET_REGISTRY.register()
class StanfordCars(BenchmarkDataset):
    """196 car models; split paths are relative to the dataset folder itself."""

    template = "a photo of a {}."  # zero-shot prompt (CoOp's)
    dataset_dir = "stanford_cars"
    short_name = "stanford_cars"
    image_dir = ""
    split_file = "split_zhou_StanfordCars.json"
    raw_split_paths = ("devkit/cars_train_annos.mat", "devkit/cars_meta.mat", "cars_test_annos_withlabels.mat")

    def build_split(self):
        trainval = self.read_annotations("cars_train", "devkit/cars_train_annos.mat")
        test = self.read_annotations("cars_test", "cars_test_annos_withlabels.mat")
        train, val = self.split_trainval(trainval)
        return train, val, test

    def read_annotations(self, image_folder: str, anno_file: str):
        """Image names and 1-based classes from a devkit .mat; names "<make model> <year>" become "<year> <make model>"."""
        from scipy.io import loadmat  # only needed when the split JSON is absent

        annotations = loadmat(osp.join(self.dataset_dir, anno_file))["annotations"][0]
        class_names = loadmat(osp.join(self.dataset_dir, "devkit", "cars_meta.mat"))["class_names"][0]
        entries = []
        for anno in annotations:
            label = int(anno["class"][0, 0]) - 1
            words = str(class_names[label][0]).split(" ")
            classname = " ".join([words[-1], *words[:-1]])
            entries.append((osp.join(self.dataset_dir, image_folder, str(anno["fname"][0])), label, classname))
        return self.to_datums(entries, source=anno_file)
