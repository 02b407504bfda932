"""docs/PORTING.md's worked example: a CoOp-fork dataset file and a ported trainer, run as written there."""
from __future__ import annotations

import os
import os.path as osp

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor, nn
from yacs.config import CfgNode as CN

import datasets  # noqa: F401  (registers the loaders and DATASET.SUBSAMPLE_CLASSES)
import trainers  # noqa: F401  (registers the trainers)
from dassl.config import get_cfg_default
from dassl.data.datasets import DATASET_REGISTRY, DatasetBase
from dassl.engine import TRAINER_REGISTRY, build_trainer
from dassl.utils import mkdir_if_missing
from datasets.dtd import DescribableTextures as DTD
from datasets.oxford_pets import OxfordPets
from trainers.base import PromptModel, PromptTrainer
from trainers.class_prompts import ClassPrompts, init_context
from trainers.losses import classification_terms, cosine_logits
from trainers.templates import dataset_template

CLASSES = ("red_square", "green_disc", "blue_bar")

# ---- the fork-style dataset file (PORTING.md, step 1: only `template` was added) -------------------------------


@DATASET_REGISTRY.register()
class PortedShapes(DatasetBase):
    """A one-folder-per-class dataset written the way CoOp-fork dataset files are."""

    dataset_dir = "ported_shapes"
    template = "a photo of a {}, a type of shape."

    def __init__(self, cfg):
        root = osp.abspath(osp.expanduser(cfg.DATASET.ROOT))
        self.dataset_dir = osp.join(root, self.dataset_dir)
        self.image_dir = osp.join(self.dataset_dir, "images")
        self.split_path = osp.join(self.dataset_dir, "split_ported_shapes.json")
        mkdir_if_missing(osp.join(self.dataset_dir, "split_fewshot"))

        if osp.exists(self.split_path):
            train, val, test = OxfordPets.read_split(self.split_path, self.image_dir)
        else:
            train, val, test = DTD.read_and_split_data(self.image_dir, new_cnames={"blue_bar": "blue bar"})
            OxfordPets.save_split(train, val, test, self.split_path, self.image_dir)

        train = self.generate_fewshot_dataset(train, num_shots=cfg.DATASET.NUM_SHOTS)
        train, val, test = OxfordPets.subsample_classes(train, val, test, subsample=cfg.DATASET.SUBSAMPLE_CLASSES)
        super().__init__(train_x=train, val=val, test=test)


# ---- the ported trainer (PORTING.md, step 2) -------------------------------------------------------------------


# In the method file this function carries @register_cfg_extension; here it is applied to the test's configs only,
# so that the other tests' configs (and their resume fingerprints) do not grow a TRAINER.COOPNORM node.
def add_coop_norm_config(cfg: CN) -> None:
    cfg.TRAINER.COOPNORM = CN()
    cfg.TRAINER.COOPNORM.N_CTX = 4
    cfg.TRAINER.COOPNORM.CTX_INIT = ""
    cfg.TRAINER.COOPNORM.W_NORM = 0.01  # weight of the context-norm penalty
    cfg.TRAINER.COOPNORM.PREC = "auto"


class CoOpNormNet(PromptModel):
    """CoOp's logits; training adds W_NORM times the mean squared norm of the context vectors."""

    def __init__(self, clip_model, ctx: Tensor, class_prompts: ClassPrompts, w_norm: float):
        super().__init__()
        self.clip = clip_model  # frozen; not a registered learner, so never in a checkpoint
        self.prompt_learner = nn.ParameterDict({"ctx": nn.Parameter(ctx)})
        self.class_prompts = class_prompts
        self.w_norm = w_norm

    def logits(self, images: Tensor) -> Tensor:
        with torch.no_grad():
            features = nn.functional.normalize(self.clip.encode_image(images).float(), dim=-1)
        text = self.class_prompts.class_features(self.clip, self.prompt_learner["ctx"])
        return cosine_logits(self.clip.logit_scale, features, text)

    def losses(self, images: dict[str, Tensor], labels: Tensor) -> dict[str, Tensor]:
        terms = classification_terms(self.logits(images["img"]), labels)
        terms["loss_norm"] = self.w_norm * self.prompt_learner["ctx"].pow(2).sum(-1).mean()
        return terms


@TRAINER_REGISTRY.register()
class CoOpNorm(PromptTrainer):
    CFG_NODE = "COOPNORM"

    def build_model(self) -> None:
        c = self.cfg.TRAINER.COOPNORM
        clip_model = self.load_backbone()
        ctx = init_context(clip_model, c.N_CTX, c.CTX_INIT)
        prompts = ClassPrompts(clip_model, self.dm.dataset.classnames, ctx.shape[0])
        self.model = CoOpNormNet(clip_model, ctx, prompts, c.W_NORM).to(self.device)
        self.register_learner(self.model.prompt_learner)


# ---- tests -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("porting")
    rng = np.random.default_rng(0)
    for label, name in enumerate(CLASSES):
        folder = root / "ported_shapes" / "images" / name
        folder.mkdir(parents=True)
        for i in range(5):
            pixels = np.full((16, 16, 3), 40, np.uint8)
            pixels[..., label] = 200 + rng.integers(0, 50)
            Image.fromarray(pixels).save(folder / f"{i}.png")
    return str(root)


def shapes_cfg(root: str, output_dir: str = "", **extra):
    cfg = get_cfg_default()
    add_coop_norm_config(cfg)
    cfg.DATASET.NAME, cfg.DATASET.ROOT, cfg.OUTPUT_DIR = "PortedShapes", root, output_dir
    for key, value in extra.items():
        cfg.merge_from_list([key.replace("__", "."), value])
    return cfg


def test_fork_dataset_files_call_the_split_helpers_on_classes(shapes_root):
    built = PortedShapes(shapes_cfg(shapes_root))  # no split file yet: split the folders and save it
    split_file = osp.join(shapes_root, "ported_shapes", "split_ported_shapes.json")
    assert osp.isfile(split_file)
    assert [len(built.train_x), len(built.val), len(built.test)] == [6, 3, 6]  # per class 5 -> 2 / 1 / 2
    assert built.classnames == ["blue bar", "green_disc", "red_square"]  # sorted folders, renamed as asked
    read = PortedShapes(shapes_cfg(shapes_root))  # now from the split file
    assert [(d.impath, d.label, d.classname) for d in read.test] == [
        (d.impath, d.label, d.classname) for d in built.test
    ]
    assert dataset_template(read) == "a photo of a {}, a type of shape."


def test_ported_trainer_trains_and_evaluates(shapes_root, tiny_clip_path, tmp_path):
    cfg = shapes_cfg(
        shapes_root, str(tmp_path), TRAINER__NAME="CoOpNorm", MODEL__BACKBONE__NAME=tiny_clip_path,
        INPUT__SIZE="(32, 32)", DATALOADER__NUM_WORKERS="0", DATALOADER__TRAIN_X__BATCH_SIZE="3",
        OPTIM__MAX_EPOCH="1", OPTIM__NAME="sgd", OPTIM__LR="0.002", TRAINER__COOPNORM__PREC="fp32",
        USE_CUDA="False",
    )  # fmt: skip
    cfg.freeze()
    trainer = build_trainer(cfg)
    before = trainer.model.prompt_learner["ctx"].detach().clone()
    trainer.train()
    assert not torch.equal(trainer.model.prompt_learner["ctx"], before)
    saved = torch.load(osp.join(str(tmp_path), "prompt_learner", "model.pth.tar-1"), weights_only=False)
    assert list(saved["state_dict"]) == ["ctx"]  # only what was learned
    assert os.path.getsize(osp.join(str(tmp_path), "prompt_learner", "model.pth.tar-1")) < 100_000
