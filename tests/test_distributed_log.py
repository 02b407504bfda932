"""A distributed run says so in its log, and its logged training terms are over the global batch."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from dassl.engine.ranks import StepTerms, describe_ranks, sum_across_ranks
from dassl.utils import load_checkpoint
from tests.test_engine import run_main
from tests.test_first_contact import method_argv

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEP_LINE = re.compile(r"epoch \[(\d+)/\d+\] batch \[(\d+)/\d+\] time \S+ \(\S+\) data \S+ \(\S+\) (.*) lr \S+ eta")
TERM = re.compile(r"(\w+) (-?[\d.]+) \((-?[\d.]+)\)")


def logged_steps(output_dir: str) -> dict[tuple[int, int], dict[str, tuple[float, float]]]:
    """(epoch, step) -> {term: (value, average)} of every per-step line of ``output_dir/log.txt``."""
    with open(os.path.join(output_dir, "log.txt")) as f:
        lines = STEP_LINE.findall(f.read())
    return {
        (int(epoch), int(step)): {name: (float(v), float(avg)) for name, v, avg in TERM.findall(terms)}
        for epoch, step, terms in lines
    }


def tensorboard_scalars(output_dir: str, tag: str) -> dict[int, float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(os.path.join(output_dir, "tensorboard"))
    events.Reload()
    return {event.step: event.value for event in events.Scalars(tag)}


def test_two_process_log_names_the_split_and_logs_the_global_batch(tiny_clip_path, fake_data_root, tmp_path):
    # Deterministic transforms: 1 and 2 processes train on the same global batches (equal weights).
    # 4 shots x 5 classes = 5 steps of 4 images; logging at steps 2 and 4 only.
    opts = ["INPUT.TRANSFORMS", "('normalize',)", "DATASET.NUM_SHOTS", "4", "TRAIN.PRINT_FREQ", "2"]
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    run_main(method_argv("CoOp", fake_data_root, single, tiny_clip_path, *opts))

    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    argv = method_argv("CoOp", fake_data_root, ddp, tiny_clip_path, *opts)
    result = subprocess.run([*launcher, "train.py", *argv], cwd=REPO, env=env, capture_output=True, timeout=300)
    assert result.returncode == 0, result.stderr.decode()[-3000:]

    with open(ddp / "log.txt") as f:
        log = f.read()
    described = [line for line in log.splitlines() if line.startswith("Distributed run:")]
    assert len(described) == 1, log[-3000:]
    for fragment in ("world size 2", "backend gloo", "rank 0 cpu, rank 1 cpu",
                     "training batch 2 per process x 2 processes = 4 global", "evaluation batch 8 per process"):
        assert fragment in described[0], described[0]
    with open(single / "log.txt") as f:
        assert "Distributed run:" not in f.read()

    one, two = load_checkpoint(str(single / "prompt_learner" / "model.pth.tar-1")), load_checkpoint(
        str(ddp / "prompt_learner" / "model.pth.tar-1"))
    torch.testing.assert_close(two["state_dict"]["ctx"], one["state_dict"]["ctx"], rtol=0, atol=1e-6)

    steps_one, steps_two = logged_steps(str(single)), logged_steps(str(ddp))
    assert sorted(steps_one) == sorted(steps_two) == [(1, 2), (1, 4)]
    for step, terms in steps_one.items():
        assert sorted(terms) == sorted(steps_two[step]) == ["acc", "loss_ce"]
        for name, (value, avg) in terms.items():
            # Printed with 4 decimals: equal up to one unit of the last digit (float rounding of the two sums).
            assert steps_two[step][name] == pytest.approx((value, avg), abs=1.01e-4), (step, name)
    # Rank 0 alone saw 2 images a step, so its accuracy moved in steps of 50 %; over 4 images it moves in 25 %.
    assert all(round(terms["acc"][0] / 25.0) * 25.0 == terms["acc"][0] for terms in steps_two.values())

    for tag in ("train/loss_ce", "train/acc"):
        tb_one, tb_two = tensorboard_scalars(str(single), tag), tensorboard_scalars(str(ddp), tag)
        assert sorted(tb_one) == sorted(tb_two) == [1, 3]  # the logging steps (0-based iteration)
        for step, value in tb_one.items():
            assert tb_two[step] == pytest.approx(value, rel=1e-5), (tag, step)


def _worker(rank: int, world: int, init_file: str, out_file: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    terms = StepTerms()
    # Unequal slices: rank 0 has 3 images a step, rank 1 one; rank 1 also reports a term rank 0 does not.
    if rank == 0:
        terms.update({"loss": torch.tensor(1.0), "acc": 100.0}, images=3)
        terms.update({"loss": 2.0, "acc": 0.0}, images=3)
    else:
        terms.update({"loss": 5.0, "acc": 0.0, "extra": 7.0}, images=1)
        terms.update({"loss": 6.0, "acc": 100.0, "extra": 9.0}, images=1)
    values = terms.global_values()
    sums = sum_across_ranks([rank + 1, 10 * rank])
    line = describe_ranks(torch.device("cpu"), train_batch=8, test_batch=16)
    if rank == 0:
        torch.save({"values": values, "sums": sums, "line": line}, out_file)
    dist.destroy_process_group()


def test_step_terms_are_weighted_by_each_rank_s_images(tmp_path):
    out_file = str(tmp_path / "out.pt")
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), out_file), nprocs=2, join=True)
    out = torch.load(out_file)
    values = out["values"]
    assert list(values) == ["loss", "acc", "extra"]
    # Latest step: (3 x 2.0 + 1 x 6.0) / 4; epoch so far: (3 x 1 + 3 x 2 + 5 + 6) / 8.
    assert values["loss"] == pytest.approx((3.0, 20.0 / 8))
    assert values["acc"] == pytest.approx((25.0, 50.0))  # accuracy over all 8 images, not a mean of rank means
    assert values["extra"] == pytest.approx((9.0, 8.0))
    assert out["sums"] == [3, 10]
    assert out["line"].startswith("Distributed run: world size 2, backend gloo; devices: rank 0 cpu, rank 1 cpu;")
    assert "training batch 4 per process x 2 processes = 8 global" in out["line"]


def test_one_process_says_nothing_and_averages_over_images():
    terms = StepTerms()
    terms.update({"loss": 1.0}, images=4)
    terms.update({"loss": 3.0}, images=4)
    assert terms.global_values() == {"loss": (3.0, 2.0)}
    assert describe_ranks(torch.device("cpu"), train_batch=4, test_batch=8) is None
    assert sum_across_ranks([2, 5]) == [2, 5]
