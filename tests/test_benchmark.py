"""tools/benchmark.py: one step on a tiny CLIP prints a JSON line with every reported key, and each method's
necessary work is the tower work of its step."""
import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import trainers  # noqa: F401  (registers the trainers)
from dassl.engine import TRAINER_REGISTRY
from dassl.engine.precision import choose_precision
from tests.test_trainers import training_methods

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
import benchmark  # noqa: E402

# The keys the record is specified to carry, then the keys kept from before.
REQUIRED_KEYS = {
    "prec", "train_step_s", "necessary_s", "eval_s_per_image", "peak_rss_mb_train", "peak_rss_mb_eval",
    "epoch_ratio", "classes", "cpu_flags",
    "trainer", "batch_size", "peak_rss_mb", "peak_rss_train_mb", "peak_rss_eval_mb", "image_tower_s",
    "text_tower_s", "n_prompts", "cut_len", "threads", "device", "precision", "step_over_necessary",
    "load_avg_train", "load_avg_eval", "cpu_model", "rss_file_mb_train", "rss_file_mb_eval",
}


def test_benchmark_prints_one_json_line_with_all_keys(tiny_clip_path):
    command = [
        sys.executable, str(REPO / "tools" / "benchmark.py"), "--backbone", tiny_clip_path, "--trainer", "GOPro",
        "--classes", "3", "--batch-size", "2", "--steps", "1", "--warmup", "0", "--threads", "1", "--json",
        "--precision", "auto", "--end-to-end", "--epoch-steps", "2", "--workers", "0",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout
    record = json.loads(lines[0])
    assert REQUIRED_KEYS <= set(record), sorted(REQUIRED_KEYS - set(record))
    assert record["trainer"] == "GOPro" and record["classes"] == 3 and record["batch_size"] == 2
    assert record["prec"] == choose_precision("auto", "cpu")[0]  # resolved as PREC auto resolves it
    # 3 text views x 2 images x 3 classes; "a photo of a" + a one-token name + "." cut to SOS..EOT.
    assert record["n_prompts"] == 18 and record["cut_len"] == 8
    assert record["train_step_s"] > 0 and record["eval_s_per_image"] > 0 and record["peak_rss_mb_train"] > 0
    assert record["necessary_s"] == round(record["image_tower_s"] + record["text_tower_s"], 4)
    # The file-backed part (torch's mapped libraries at least) is inside the peak it helps explain.
    assert 0 < record["rss_file_mb_train"] < record["peak_rss_mb_train"]
    assert 0 < record["rss_file_mb_eval"] < record["peak_rss_mb_eval"]
    # 2 classes' worth of training images at batch 2: whole epochs of 3 steps through the DataLoader.
    assert record["epoch_steps"] == 3 and record["epoch_ratio"] > 0 and record["num_workers"] == 0
    assert set(record["cpu_flags"]) <= set(benchmark.REPORTED_CPU_FLAGS)


def test_every_registered_trainer_is_benchmarkable_by_name():
    args = benchmark.parse_args(["--trainer", "all"])
    assert args.trainer == list(TRAINER_REGISTRY.registered_names()) and args.precision == "auto"
    args = benchmark.parse_args(["--trainer", "CoCoOp", "--precision", "fp32", "--memory-budget-gb", "3"])
    cfg = benchmark.build_cfg(args, "CoCoOp", "/nonexistent", "/nonexistent", 224)
    # PREC goes to the trainer's own node (CoCoOp.CFG_NODE), found through the registry, not a table in the tool.
    assert cfg.TRAINER.COCOOP.PREC == "fp32" and cfg.TRAIN.MEMORY_BUDGET_GB == 3.0


@contextlib.contextmanager
def recorded_tower_calls(backbone):
    """Every tower call on ``backbone`` while open: (tower, rows, prompted, autograd on).

    "prompted" is whether vision prompts were given (image tower) or how many deep prompts (text tower).
    """
    calls = []
    towers = {"encode_image": "image", "encode_image_with_layers": "image+layers", "encode_prompts": "text"}

    def spy(tower, method):
        def call(inputs, *args, **kwargs):
            if tower == "text":
                prompted = len(kwargs.get("deep_prompts", args[2] if len(args) > 2 else ()))
            else:
                prompted = (args[0] if args else kwargs.get("prompts")) is not None
            calls.append((tower, len(inputs), prompted, torch.is_grad_enabled()))
            return method(inputs, *args, **kwargs)

        return call

    for name, tower in towers.items():
        setattr(backbone, name, spy(tower, getattr(backbone, name)))
    try:
        yield calls
    finally:
        for name in towers:
            delattr(backbone, name)


@pytest.mark.parametrize("trainer_name", training_methods())
def test_necessary_work_is_the_tower_calls_of_a_step(trainer_name, tiny_clip_path, tmp_path):
    """The benchmark's necessary work makes the very tower calls a training step makes (after the first step,
    which computes what stays fixed for the run): same batch sizes, prompts and autograd; e.g. PromptSRC's
    teacher pass, prompted image towers with gradients, VPT's fixed text without a text pass."""
    config = REPO / "configs" / "trainers" / trainer_name / "tiny.yaml"
    args = benchmark.parse_args(["--backbone", tiny_clip_path, "--trainer", trainer_name, "--classes", "3",
                                 "--batch-size", "2", "--precision", "fp32", "--config-file", str(config)])
    trainer, _ = benchmark.build_benchmark_trainer(args, trainer_name, args.classes, str(tmp_path))
    batch = benchmark.on_device(next(iter(trainer.train_loader_x)), trainer.device)
    work = benchmark.step_work(trainer, args.batch_size)
    trainer.set_model_mode("train")
    trainer.forward_backward(batch)
    with recorded_tower_calls(trainer.model.clip) as step_calls:
        trainer.forward_backward(batch)
    with recorded_tower_calls(trainer.model.clip) as necessary_calls:
        benchmark.image_tower_fn(trainer, work, batch)()
        text_pass = benchmark.text_tower_fn(trainer, work)
        if text_pass is not None:
            text_pass()
    assert sorted(necessary_calls) == sorted(step_calls)
    assert any(call[3] for call in step_calls)  # a step that learns has some tower call under autograd
