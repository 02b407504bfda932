"""torchrun with 2 CPU ranks (gloo) learns what one process learns from the same global batches."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import torch

from dassl.utils import load_checkpoint
from tests.test_engine import make_toy_images, run_main, train_argv

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read_accuracy(output_dir: str) -> str:
    with open(os.path.join(output_dir, "log.txt")) as f:
        found = re.findall(r"\* accuracy: ([\d.]+)%", f.read())
    assert found, f"no accuracy line in {output_dir}/log.txt"
    return found[-1]


def test_two_ranks_match_one_process(tmp_path):
    root = make_toy_images(str(tmp_path / "data"))
    # No dropout, no random flips: every rank's half-batch is exactly half of the global batch.
    extra = ["INPUT.TRANSFORMS", "('normalize',)"]
    single, ddp = str(tmp_path / "single"), str(tmp_path / "ddp")
    run_main(train_argv(root, single, extra=extra, trainer="EngineToyPlainTrainer"))

    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    argv = train_argv(root, ddp, extra=extra, trainer="EngineToyPlainTrainer")
    result = subprocess.run(
        [*launcher, "-m", "tests.test_engine", *argv], cwd=REPO, env=env, capture_output=True, timeout=300
    )
    assert result.returncode == 0, result.stderr.decode()[-3000:]

    one = load_checkpoint(os.path.join(single, "toy", "model.pth.tar-2"))["state_dict"]
    two = load_checkpoint(os.path.join(ddp, "toy", "model.pth.tar-2"))["state_dict"]
    for key in one:
        assert torch.allclose(one[key], two[key], atol=1e-6), key
    assert not torch.equal(one["2.weight"], torch.zeros_like(one["2.weight"]))
    assert read_accuracy(ddp) == read_accuracy(single)
    # Rank 0 alone writes: one log file, and the checkpoint folder once.
    assert sorted(f for f in os.listdir(ddp) if f.startswith("log.txt")) == ["log.txt"]
    assert sorted(os.listdir(os.path.join(ddp, "toy"))) == ["checkpoint", "model.pth.tar-2"]
