"""Reliability: exact resume after SIGKILL / SIGINT / SIGTERM, non-finite losses, config mismatch."""
from __future__ import annotations

import hashlib
import logging
import os
import signal
import subprocess
import sys

import pytest
import torch

from dassl.engine import ConfigMismatchError, TrainingInterrupted
from dassl.utils import load_checkpoint
from tests.test_engine import KILL_AT, NAN_AT, SIGNAL_AT, make_toy_images, run_main, train_argv

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_EPOCH = 3


def final_state(output_dir) -> dict:
    """The learned weights of a finished toy run."""
    ckpt = load_checkpoint(os.path.join(output_dir, "toy", f"model.pth.tar-{MAX_EPOCH}"))
    return ckpt["state_dict"]


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key  # bit for bit


def file_digest(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def accuracy_lines(messages: list[str]) -> list[str]:
    return [m for m in messages if m.startswith("* accuracy:")]


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory) -> str:
    return make_toy_images(str(tmp_path_factory.mktemp("toy_data")))


@pytest.fixture(scope="module")
def reference(toy_root, tmp_path_factory):
    """An uninterrupted 3-epoch run: (output dir, learned weights)."""
    out = str(tmp_path_factory.mktemp("reference"))
    run_main(train_argv(toy_root, out, max_epoch=MAX_EPOCH))
    return out, final_state(out)


def test_sigkill_mid_epoch_then_rerun_matches_uninterrupted(toy_root, tmp_path, reference):
    out = str(tmp_path / "run")
    argv = train_argv(toy_root, out, max_epoch=MAX_EPOCH)
    env = dict(os.environ, **{KILL_AT: "2:2", "HF_HUB_OFFLINE": "1"})
    killed = subprocess.run(
        [sys.executable, "-m", "tests.test_engine", *argv], cwd=REPO, env=env, capture_output=True, timeout=240
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    last = load_checkpoint(os.path.join(out, "last.pth.tar"))
    assert (last["epoch"], last["steps_done"]) == (1, 0)  # the end of epoch 1 survived the kill

    run_main(argv)  # the same command again
    assert_same_weights(final_state(out), reference[1])


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_signal_saves_mid_epoch_and_rerun_matches_uninterrupted(toy_root, tmp_path, reference, monkeypatch, signame):
    out = str(tmp_path / "run")
    argv = train_argv(toy_root, out, max_epoch=MAX_EPOCH)
    monkeypatch.setenv(SIGNAL_AT, f"2:2:{signame}")
    signum = getattr(signal, signame)
    handler_before = signal.getsignal(signum)
    with pytest.raises(TrainingInterrupted) as info:
        run_main(argv)
    assert info.value.code == 128 + signum
    assert "Run the same command again to resume" in str(info.value)
    assert signal.getsignal(signum) is handler_before  # the handler was put back
    last = load_checkpoint(os.path.join(out, "last.pth.tar"))
    assert (last["epoch"], last["steps_done"]) == (1, 2)  # stopped right after step 2 of epoch 2

    monkeypatch.delenv(SIGNAL_AT)
    run_main(argv)
    assert_same_weights(final_state(out), reference[1])


def test_nonfinite_loss_stops_and_keeps_the_last_good_checkpoint(toy_root, tmp_path, monkeypatch):
    out = str(tmp_path / "run")
    monkeypatch.setenv(NAN_AT, "2:2")
    with pytest.raises(FloatingPointError) as info:
        run_main(train_argv(toy_root, out, max_epoch=MAX_EPOCH))
    message = str(info.value)
    assert "epoch 2/3, step 2/3" in message and "loss_ce=nan" in message and "acc=" in message
    assert "last.pth.tar" in message and "untouched" in message
    last = load_checkpoint(os.path.join(out, "last.pth.tar"))
    assert (last["epoch"], last["steps_done"]) == (1, 0)
    assert torch.isfinite(last["models"]["toy"]["state_dict"]["2.weight"]).all()


def test_skip_nonfinite_counts_and_finishes(toy_root, tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO)
    out = str(tmp_path / "run")
    monkeypatch.setenv(NAN_AT, "2:2")
    run_main(train_argv(toy_root, out, max_epoch=MAX_EPOCH, extra=["TRAIN.SKIP_NONFINITE", "True"]))
    assert "WARNING: skipped 1 step(s) with a non-finite loss" in caplog.text
    weights = final_state(out)
    assert all(torch.isfinite(v).all() for v in weights.values())
    assert load_checkpoint(os.path.join(out, "last.pth.tar"))["nonfinite_skipped"] == 1


def test_different_config_refuses_to_resume(toy_root, reference, caplog):
    out, weights = reference
    last_path = os.path.join(out, "last.pth.tar")
    before = file_digest(last_path)
    with pytest.raises(ConfigMismatchError, match=r"different config \(OPTIM\.LR: 0\.01 -> 0\.1\)"):
        run_main(train_argv(toy_root, out, max_epoch=MAX_EPOCH, extra=["OPTIM.LR", "0.1"]))
    assert file_digest(last_path) == before
    # Run-local keys (printing, checkpoint frequency) do not block a resume: the finished run is
    # picked up at its end and only tested again.
    caplog.set_level(logging.INFO)
    run_main(train_argv(toy_root, out, max_epoch=MAX_EPOCH, extra=["TRAIN.PRINT_FREQ", "5"]))
    assert f"{MAX_EPOCH} epoch(s) done" in caplog.text
    assert "Finish training" in caplog.text and accuracy_lines(caplog.messages)
    assert file_digest(last_path) == before
    assert_same_weights(final_state(out), weights)
