"""First contact: a user mistake in a real method's run is one ``error:`` line and exit code 1,
with its traceback under ``--debug``; the prompt methods' checks and clip's load failures count as user errors."""
from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

import clip
import train
from dassl.utils import ConfigError
from trainers.deep_prompts import check_vision_backbone

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def method_argv(trainer: str, data_root: str, output_dir, backbone: str, *opts: str) -> list[str]:
    """A train.py command line for ``trainer``'s tiny config on the fake Caltech101 (2 shots)."""
    return [
        "--root", data_root, "--trainer", trainer, "--seed", "1", "--output-dir", str(output_dir),
        "--dataset-config-file", os.path.join(REPO, "configs", "datasets", "caltech101.yaml"),
        "--config-file", os.path.join(REPO, "configs", "trainers", trainer, "tiny.yaml"),
        "MODEL.BACKBONE.NAME", backbone, "DATASET.NUM_SHOTS", "2", *opts,
    ]


def run_cli(argv: list[str]) -> int:
    """train.cli in this process, then undo its logging set-up (stdout tee, handlers) as tests.test_engine does."""
    root = logging.getLogger()
    saved_handlers, saved_level, saved_stdout = list(root.handlers), root.level, sys.stdout
    try:
        return train.cli(argv)
    finally:
        for handler in [h for h in root.handlers if h not in saved_handlers]:
            root.removeHandler(handler)
        root.setLevel(saved_level)
        sys.stdout = saved_stdout


def assert_one_error(stderr: str, *fragments: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("error: ") and "--debug" in lines[1], stderr
    assert "Traceback" not in stderr, stderr
    for fragment in fragments:
        assert fragment in lines[0], stderr


def not_a_checkpoint(tmp_path) -> str:
    path = tmp_path / "notes.pt"
    path.write_text("these are not weights")
    return str(path)


# (trainer, backbone (a fixture name or a function of tmp_path), overrides, error type, fragments of the line)
CASES = {
    "missing_backbone_file": (
        "CoOp", lambda tmp_path: str(tmp_path / "missing.pt"), [], clip.WeightsNotFoundError,
        ["missing.pt", "does not exist", "(set by MODEL.BACKBONE.NAME)"],
    ),
    "unknown_backbone_name": (
        "CoOp", lambda tmp_path: "ViT-B16", [], clip.UnsupportedBackboneError,
        ["Unknown CLIP model 'ViT-B16'", "ViT-B/16", "(set by MODEL.BACKBONE.NAME)"],
    ),
    "bad_checkpoint_file": (
        "CoOp", not_a_checkpoint, [], clip.CheckpointFormatError, ["notes.pt", "as a CLIP checkpoint"],
    ),
    "n_ctx_too_long": (
        "CoOp", "tiny_clip_path", ["TRAINER.COOP.N_CTX", "80"], ConfigError,
        ["TRAINER.COOP.N_CTX 80 + class name", "context length is 77"],
    ),
    "input_size_mismatch": (
        "CoOp", "tiny_clip_path", ["INPUT.SIZE", "(64, 64)"], ConfigError, ["INPUT.SIZE is (64, 64)", "(32, 32)"],
    ),
    "depth_beyond_the_tower": (
        "IVLP", "tiny_clip_path", ["TRAINER.IVLP.PROMPT_DEPTH_TEXT", "3"], ConfigError,
        ["TRAINER.IVLP.PROMPT_DEPTH_TEXT is 3; valid: 1..2 (the text tower has 2 blocks)"],
    ),
    "vision_prompts_on_a_resnet": (
        "IVLP", "tiny_resnet_clip_path", [], ConfigError,
        ["TRAINER.IVLP.PROMPT_DEPTH_VISION is 2 but vision prompts need a ViT backbone"],
    ),
    "unknown_precision": (
        "CoOp", "tiny_clip_path", ["TRAINER.COOP.PREC", "fp64"], ConfigError,
        ["TRAINER.COOP.PREC is 'fp64'; valid values: auto, fp32, fp16, amp, bf16"],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_user_error_in_a_method_run_is_one_line_and_debug_raises_it(case, fake_data_root, tmp_path, capsys,
                                                                       request):
    trainer, backbone, opts, error_type, fragments = CASES[case]
    backbone = request.getfixturevalue(backbone) if isinstance(backbone, str) else backbone(tmp_path)
    argv = method_argv(trainer, fake_data_root, tmp_path / "run", backbone, *opts)
    assert run_cli(argv) == 1
    assert_one_error(capsys.readouterr().err, *fragments)
    with pytest.raises(error_type):
        run_cli(argv + ["--debug"])


def test_train_py_exits_non_zero_with_the_error_line_alone(fake_data_root, tiny_clip_path, tmp_path):
    # The shell's view of one case (PREC is checked before any data is read): exit code, stderr and nothing
    # else there. (That --debug re-raises, so Python prints the traceback, is checked in-process above.)
    argv = method_argv("CoOp", fake_data_root, tmp_path / "run", tiny_clip_path, "TRAINER.COOP.PREC", "fp64")
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    env.pop(train.DEBUG_ENV, None)
    run = subprocess.run([sys.executable, "train.py", *argv], cwd=REPO, env=env, capture_output=True, text=True)
    assert run.returncode == 1, run.stderr[-3000:]
    assert_one_error(run.stderr, "error: TRAINER.COOP.PREC is 'fp64'; valid values: auto, fp32, fp16, amp, bf16")


def test_vision_prompts_on_a_vit_that_does_not_pool_its_class_token_are_refused(tiny_clip_path):
    vit = clip.load(tiny_clip_path)
    check_vision_backbone(vit, "TRAINER.VPT.PROMPT_DEPTH_VISION", 1)
    vit.visual.pool_type = "avg"
    with pytest.raises(ConfigError, match=r"TRAINER.VPT.PROMPT_DEPTH_VISION is 1 .* pools with 'avg'; set "):
        check_vision_backbone(vit, "TRAINER.VPT.PROMPT_DEPTH_VISION", 1)


def test_clip_load_errors_keep_their_built_in_types_and_are_user_errors():
    for error_type, built_in in [(clip.WeightsNotFoundError, FileNotFoundError),
                                 (clip.UnsupportedBackboneError, ValueError),
                                 (clip.CheckpointFormatError, ValueError),
                                 (clip.CorruptDownloadError, RuntimeError)]:
        error = error_type("x")
        assert isinstance(error, built_in) and train._is_user_error(error), error_type
    assert not train._is_user_error(ValueError("a bug"))
