"""UCF101 middle frames (CoOp layout: ``ucf101/UCF-101-midframes/<Action_Name>/`` + ``split_zhou_UCF101.json``)."""
import os.path as osp
import re

from dassl.data.datasets import DATASET_REGISTRY

from .base import BenchmarkDataset


@DATASET_REGISTRY.register()
class UCF101(BenchmarkDataset):
    """101 human actions, one frame per video."""

    template = "a photo of a person doing {}."  # zero-shot prompt (CoOp's)
    dataset_dir = "ucf101"
    short_name = "ucf101"
    image_dir = "UCF-101-midframes"
    split_file = "split_zhou_UCF101.json"
    required_paths = ("UCF-101-midframes",)
    raw_split_paths = ("ucfTrainTestlist/classInd.txt", "ucfTrainTestlist/trainlist01.txt",
                       "ucfTrainTestlist/testlist01.txt")

    def build_split(self):
        path = osp.join(self.dataset_dir, "ucfTrainTestlist", "classInd.txt")
        label_of = {}
        for n, line in self.read_text_lines(path):
            number, _, action = line.partition(" ")
            if not number.isdigit() or not action:
                raise self.content_error(path, f'line {n} "{line}" is not "<class id> <Action>"')
            label_of[action] = int(number) - 1
        trainval = self.read_video_list("trainlist01.txt", label_of)
        test = self.read_video_list("testlist01.txt", label_of)
        train, val = self.split_trainval(trainval)
        return train, val, test

    def read_video_list(self, filename: str, label_of: dict):
        """Lines ``<Action>/<video>.avi [label]``; frames live in ``<Action_Words>/<video>.jpg``."""
        path = osp.join(self.dataset_dir, "ucfTrainTestlist", filename)
        entries = []
        for n, line in self.read_text_lines(path):
            action, _, video = line.split(" ")[0].partition("/")
            if action not in label_of:
                raise self.content_error(path, f'line {n}: action "{action}" is not in classInd.txt')
            folder = "_".join(re.findall("[A-Z][^A-Z]*", action))  # ApplyEyeMakeup -> Apply_Eye_Makeup
            frame = osp.join(self.image_dir, folder, video.replace(".avi", ".jpg"))
            entries.append((frame, label_of[action], folder))
        return self.to_datums(entries, source=path)
