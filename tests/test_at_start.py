"""TEST.AT_START: the untrained model's accuracy is logged before the first step, and nothing of the training changes."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch

from dassl.utils import load_checkpoint
from tests.test_engine import make_toy_images, run_main, train_argv
from tests.test_first_contact import run_cli
from tests.test_world import world_argv

REPO = Path(__file__).resolve().parents[1]
AT_START_LINE = re.compile(r"^\* accuracy at initialisation: (\d+\.\d)%$", re.MULTILINE)
ACCURACY_LINE = re.compile(r"^\* accuracy: (\d+\.\d)%$", re.MULTILINE)
WORLD_CLIP = str(REPO / "assets" / "world_clip_vit.pt")
# 12 classes x 10 test images: one image is 0.8 %, so equal figures at one decimal are equal counts.
WORLD_SIZES = ["DATASET.WORLD.N_TRAIN", "1", "DATASET.WORLD.N_VAL", "1", "DATASET.WORLD.N_TEST", "10"]


def read_log(output_dir) -> str:
    with open(os.path.join(output_dir, "log.txt")) as f:
        return f.read()


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory) -> str:
    return make_toy_images(str(tmp_path_factory.mktemp("toy_data")))


def test_coop_from_a_photo_of_a_starts_at_zero_shot_clip(tmp_path):
    """CoOp's context initialised from "a photo of a" is the zero-shot prompt "a photo of a {}." before any step."""
    data = tmp_path / "data"
    zero_shot, coop = tmp_path / "zsclip", tmp_path / "coop"
    zs_argv = world_argv("world_shades", data, zero_shot, WORLD_CLIP, *WORLD_SIZES,
                         "TRAINER.ZSCLIP.TEMPLATE", "a photo of a {}.")
    zs_argv[zs_argv.index("CoOp")] = "ZeroshotCLIP"
    zs_argv[zs_argv.index(str(REPO / "configs" / "trainers" / "CoOp" / "tiny.yaml"))] = str(
        REPO / "configs" / "trainers" / "ZeroshotCLIP" / "tiny.yaml")
    assert run_cli([*zs_argv, "--eval-only"]) == 0
    assert run_cli(world_argv("world_shades", data, coop, WORLD_CLIP, *WORLD_SIZES, "INPUT.TRANSFORMS",
                              "('normalize',)", "TRAINER.COOP.N_CTX", "4", "TRAINER.COOP.CTX_INIT", "a photo of a",
                              "TEST.AT_START", "True")) == 0

    zs_accuracy = ACCURACY_LINE.findall(read_log(zero_shot))
    coop_log = read_log(coop)
    at_start = AT_START_LINE.findall(coop_log)
    assert len(zs_accuracy) == 1 and len(at_start) == 1, coop_log[-3000:]
    assert at_start[0] == zs_accuracy[0]
    assert 100 / 12 + 5 < float(at_start[0]) < 100  # above chance: the figure says something about the model
    # Before the first step, and not a result: the only "* accuracy:" line is the final evaluation's.
    assert coop_log.index("* accuracy at initialisation") < coop_log.index("epoch [1/1] batch [1/")
    assert len(ACCURACY_LINE.findall(coop_log)) == 1
    assert coop_log.index("epoch [1/1] batch [1/") < coop_log.index("=> result")


def test_training_is_the_same_with_and_without_the_evaluation_at_start(toy_root, tmp_path):
    """The toy trainer draws dropout masks and flips from the global RNG: any draw by the evaluation would show."""
    runs = {}
    for at_start in (False, True):
        out = tmp_path / f"at_start_{at_start}"
        run_main(train_argv(toy_root, str(out), extra=["TEST.AT_START", str(at_start)]))
        runs[at_start] = load_checkpoint(str(out / "toy" / "model.pth.tar-2"))["state_dict"]
        log = read_log(out)
        assert len(AT_START_LINE.findall(log)) == int(at_start), log[-3000:]
    for key, value in runs[False].items():
        assert torch.equal(runs[True][key], value), key


def test_a_resumed_run_is_not_evaluated_at_start_and_not_refused(toy_root, tmp_path):
    out = str(tmp_path / "run")
    run_main(train_argv(toy_root, out, max_epoch=2))
    run_main(train_argv(toy_root, out, max_epoch=2, extra=["TEST.AT_START", "True"]))  # run-local: resumes
    log = read_log(out)
    assert "TEST.AT_START: no evaluation at initialisation, the run resumes" in log
    assert "Refusing to resume" not in log and not AT_START_LINE.search(log)
    assert "2 epoch(s) done" in log and ACCURACY_LINE.search(log)
