"""ImageNetV2 matched-frequency (``imagenetv2/imagenetv2-matched-frequency-format-val/<label>/``)."""
import os.path as osp

from dassl.data.datasets import DATASET_REGISTRY, Datum
from dassl.utils import listdir_nohidden

from .imagenet import ImageNetVariant

IMAGE_DIR = "imagenetv2-matched-frequency-format-val"


@DATASET_REGISTRY.register()
class ImageNetV2(ImageNetVariant):
    """A new ImageNet test set; folder ``<i>`` holds label i, named by line i of ``classnames.txt``."""

    template = "a photo of a {}."  # zero-shot prompt (CoOp's)
    dataset_dir = "imagenetv2"
    short_name = "imagenetv2"
    image_dir = IMAGE_DIR
    required_paths = (IMAGE_DIR, "classnames.txt")

    def read_splits(self):
        names = list(self.read_classnames().values())  # sorted-wnid order gives ImageNet's label order
        missing = self.first_missing_label_folder(self.image_dir, len(names))
        if missing is not None:
            raise self.missing_error(missing, "class folder")
        data = []
        for label, name in enumerate(names):
            folder = osp.join(self.image_dir, str(label))
            data += [
                Datum.from_verified(impath=osp.join(folder, f), label=label, classname=name)
                for f in listdir_nohidden(folder, sort=True)
            ]
        return data, None, data

    @staticmethod
    def first_missing_label_folder(image_dir: str, num_classes: int):
        for label in range(num_classes):
            if not osp.isdir(osp.join(image_dir, str(label))):
                return osp.join(image_dir, str(label))
        return None

    @classmethod
    def first_missing_image(cls, dataset_dir: str):
        with open(osp.join(dataset_dir, "classnames.txt")) as f:
            num_classes = sum(1 for line in f if line.strip())
        missing = cls.first_missing_label_folder(osp.join(dataset_dir, IMAGE_DIR), num_classes)
        return missing, int(missing is not None)
