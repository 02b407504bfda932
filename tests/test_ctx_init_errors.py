"""A CTX_INIT that fits the context alone but not with the longest class name is named as CTX_INIT (the key the
user set), with its token count, the class prompt's and the limit, for every trainer with a text context; N_CTX
is named only when no CTX_INIT is set.
Through train.py's command line on the fake StanfordCars, whose longest class prompt ('2007 BMW X5 SUV.' with
SOS and EOT) is 11 tokens."""
from __future__ import annotations

import os

import pytest

from tests.test_first_contact import REPO, assert_one_error, method_argv, run_cli

WORDS = "_".join(["photo"] * 70)  # 70 tokens: under the 73 a prompt allows, over the 66 this class set leaves
# trainer -> (its config node, options that give it a text context)
NODES = {"CoOp": ("TRAINER.COOP", ()), "CoCoOp": ("TRAINER.COCOOP", ()), "KgCoOp": ("TRAINER.KGCOOP", ()),
         "GOPro": ("TRAINER.GOPRO", ()), "IVLP": ("TRAINER.IVLP", ()), "MaPLe": ("TRAINER.MAPLE", ()),
         "PromptSRC": ("TRAINER.PROMPTSRC", ()), "VPT": ("TRAINER.VPT", ("TRAINER.VPT.N_CTX_TEXT", "2"))}


def cars_argv(trainer: str, data_root: str, output_dir, backbone: str, *opts: str) -> list[str]:
    argv = method_argv(trainer, data_root, output_dir, backbone, *opts)
    at = argv.index("--dataset-config-file") + 1
    argv[at] = os.path.join(REPO, "configs", "datasets", "stanford_cars.yaml")
    return argv


@pytest.mark.parametrize("trainer", sorted(NODES))
def test_a_ctx_init_too_long_for_the_class_names_is_a_ctx_init_error(trainer, fake_data_root, tiny_clip_path,
                                                                      tmp_path, capsys):
    node, opts = NODES[trainer]
    argv = cars_argv(trainer, fake_data_root, tmp_path / "run", tiny_clip_path, f"{node}.CTX_INIT", WORDS, *opts)
    assert run_cli(argv) == 1
    stderr = capsys.readouterr().err
    assert_one_error(stderr, f"{node}.CTX_INIT 'photo photo", "has 70 tokens", "'2007 BMW X5 SUV'",
                     "adds 11", "81 tokens, but the context length is 77", f"{node}.CTX_INIT of at most 66 tokens")
    assert "N_CTX" not in stderr.splitlines()[0]


def test_without_ctx_init_the_error_names_n_ctx(fake_data_root, tiny_clip_path, tmp_path, capsys):
    argv = cars_argv("CoOp", fake_data_root, tmp_path / "run", tiny_clip_path,
                     "TRAINER.COOP.CTX_INIT", "", "TRAINER.COOP.N_CTX", "70")
    assert run_cli(argv) == 1
    stderr = capsys.readouterr().err
    assert_one_error(stderr, "TRAINER.COOP.N_CTX 70", "use TRAINER.COOP.N_CTX <= 66")
    assert "CTX_INIT" not in stderr.splitlines()[0]
