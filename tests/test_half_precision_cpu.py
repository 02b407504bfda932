"""fp16 autocast with a GradScaler, run on the CPU through the test-only GOPRO_TEST_CPU_FP16 switch.

A text-only trainer (CoOp) and a deep-prompt trainer (MaPLe): the loss is scaled and the scaler updated, a planted
inf in the gradients skips exactly one optimizer step, the scaler's state is in the checkpoint and comes back on
resume, and a run stopped mid-epoch resumes bit-identically.
"""
from __future__ import annotations

import logging
import os
import signal

import pytest
import torch
from torch import nn

from dassl.config import get_cfg_default
from dassl.engine import build_trainer
from dassl.engine.interrupt import TrainingInterrupted
from dassl.engine.precision import CPU_FP16_ENV, choose_precision
from dassl.utils import load_checkpoint, set_random_seed

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EPOCHS, STEPS_PER_EPOCH = 2, 2  # 5 classes x 2 shots, batch 4
INF_AT = 1  # the (0-based, run-wide) step whose gradients get an inf
STOP_AFTER = 2  # the step after which the interrupted run is stopped: mid-epoch 2
# Both run fp16 autocast with a GradScaler; PREC fp16 keeps the backbone's weights in fp16 (as on a GPU), amp in fp32.
CASES = [("CoOp", "fp16"), ("MaPLe", "amp")]
WEIGHT_DTYPE = {"fp16": torch.float16, "amp": torch.float32}
# Low enough that the tiny CLIP's gradients never overflow on their own (torch's default, 2**16, makes fp16
# weights skip the first step), so the one skipped step is the planted inf.
INIT_SCALE = 2.0**10


@pytest.fixture(scope="module")
def caltech_root(tmp_path_factory) -> str:
    from tests.fake_trees import make_fake_trees

    root = tmp_path_factory.mktemp("data")
    make_fake_trees(str(root), ["Caltech101"])
    return str(root)


@pytest.fixture(autouse=True)
def cpu_fp16(monkeypatch):
    monkeypatch.setenv(CPU_FP16_ENV, "1")


def _cfg(trainer: str, prec: str, root: str, clip_path: str, output_dir: str):
    import datasets  # noqa: F401  (registers the dataset loaders)
    import trainers  # noqa: F401  (registers the trainers and their keys)

    cfg = get_cfg_default()
    cfg.merge_from_file(os.path.join(REPO, "configs", "datasets", "caltech101.yaml"))
    cfg.merge_from_file(os.path.join(REPO, "configs", "trainers", trainer, "tiny.yaml"))
    cfg.merge_from_list([
        "DATASET.ROOT", root, "OUTPUT_DIR", output_dir, "TRAINER.NAME", trainer, "MODEL.BACKBONE.NAME", clip_path,
        "DATASET.NUM_SHOTS", "2", "OPTIM.MAX_EPOCH", str(EPOCHS), "SEED", "1", "USE_CUDA", "False",
        f"TRAINER.{trainer.upper()}.PREC", prec, "TEST.NO_TEST", "True",
    ])
    cfg.freeze()
    return cfg


class _Probe:
    """Plants an inf in one step's gradients and records, per step: the scale, the weights, the gradient before
    and after unscaling, whether the optimizer stepped, and the dtypes fp16 autocast gave the linear layers."""

    def __init__(self, trainer, inf_at: int | None, stop_after: int | None = None):
        self.trainer, self.inf_at, self.stop_after = trainer, inf_at, stop_after
        name = trainer.get_model_names()[0]
        self.optim = trainer._optims[name]
        self.param = next(p for p in trainer._models[name].parameters() if p.requires_grad)
        self.scales, self.weights, self.scaled, self.unscaled, self.stepped, self.dtypes = [], [], {}, {}, [], set()
        self.param.register_hook(self._on_grad)
        self.optim.register_step_pre_hook(self._on_step)
        for module in trainer.model.modules():
            if isinstance(module, nn.Linear):
                module.register_forward_hook(lambda module, args, out: self.dtypes.add(out.dtype))
        forward_train = trainer.forward_train

        def probed_forward_train(batch):
            step = self.step
            if step == self.stop_after:
                os.kill(os.getpid(), signal.SIGINT)  # the engine's handler: finish this step, save, stop
            self.scales.append((step, trainer.grad_scaler.get_scale()))
            self.weights.append((step, self.param.detach().clone()))
            return forward_train(batch)

        trainer.forward_train = probed_forward_train

    @property
    def step(self) -> int:
        return self.trainer.epoch * self.trainer.num_batches + self.trainer.batch_idx

    def _on_grad(self, grad):
        self.scaled[self.step] = grad.detach().clone()
        if self.step == self.inf_at:
            grad = grad.clone()
            grad.view(-1)[0] = float("inf")
        return grad

    def _on_step(self, optimizer, args, kwargs):  # runs only when the scaler lets the optimizer step
        self.stepped.append(self.step)
        self.unscaled[self.step] = self.param.grad.detach().clone()


def _train(cfg, inf_at: int | None, stop_after: int | None = None):
    set_random_seed(cfg.SEED)
    trainer = build_trainer(cfg)
    trainer.grad_scaler = torch.amp.GradScaler("cpu", init_scale=INIT_SCALE)
    probe = _Probe(trainer, inf_at, stop_after)
    trainer.train()
    return trainer, probe


def test_the_switch_is_needed_for_half_precision_on_the_cpu(monkeypatch, caplog):
    assert choose_precision("fp16", "cpu")[0] == choose_precision("amp", "cpu")[0] == "fp16"
    monkeypatch.delenv(CPU_FP16_ENV)
    assert choose_precision("fp16", "cpu")[0] == choose_precision("amp", "cpu")[0] == "fp32"


@pytest.mark.parametrize("trainer_name,prec", CASES)
def test_the_loss_is_scaled_and_a_planted_inf_skips_exactly_one_step(
    trainer_name, prec, caltech_root, tiny_clip_path, tmp_path, caplog
):
    caplog.set_level(logging.INFO)
    cfg = _cfg(trainer_name, prec, caltech_root, tiny_clip_path, str(tmp_path / "run"))
    trainer, probe = _train(cfg, inf_at=INF_AT)
    assert trainer.precision == "fp16" and f"forced by {CPU_FP16_ENV}=1" in caplog.text
    assert isinstance(trainer.grad_scaler, torch.amp.GradScaler) and torch.float16 in probe.dtypes
    assert {p.dtype for p in trainer.model.parameters() if not p.requires_grad} == {WEIGHT_DTYPE[prec]}  # the backbone

    total = EPOCHS * STEPS_PER_EPOCH
    scales = dict(probe.scales)
    initial = scales[0]
    assert [s for s, _ in probe.scales] == list(range(total))
    # Applied: backward saw the loss times the scale; the optimizer, the gradient divided by it (a power of 2: exact).
    assert torch.equal(probe.unscaled[0], probe.scaled[0] / initial) and probe.scaled[0].abs().max() > 0
    # The inf step: no optimizer step, the weights unchanged, the scale halved; every other step steps.
    assert probe.stepped == [s for s in range(total) if s != INF_AT]
    weights = dict(probe.weights)
    assert torch.equal(weights[INF_AT], weights[INF_AT + 1])
    assert not torch.equal(weights[0], weights[1]) and not torch.equal(weights[INF_AT + 1], weights[INF_AT + 2])
    assert scales[INF_AT] == initial and scales[INF_AT + 1] == initial / 2 == trainer.grad_scaler.get_scale()
    # Updated: the growth tracker counts the finite steps since the inf (and restarted at it).
    state = trainer.grad_scaler.state_dict()
    assert state["_growth_tracker"] == total - INF_AT - 1

    saved = load_checkpoint(str(tmp_path / "run" / "last.pth.tar"))["grad_scaler"]
    assert saved == state
    resumed = build_trainer(cfg)
    assert initial == INIT_SCALE and resumed.grad_scaler.get_scale() == 2.0**16  # the engine's, until the state is read
    assert resumed.resume_run_if_exist(cfg.OUTPUT_DIR) == EPOCHS
    assert resumed.grad_scaler.state_dict() == state


@pytest.mark.parametrize("trainer_name,prec", CASES)
def test_a_run_stopped_mid_epoch_resumes_bit_identically_under_the_scaler(
    trainer_name, prec, caltech_root, tiny_clip_path, tmp_path
):
    cfg = _cfg(trainer_name, prec, caltech_root, tiny_clip_path, str(tmp_path / "whole"))
    whole, _ = _train(cfg, inf_at=INF_AT)

    cfg = _cfg(trainer_name, prec, caltech_root, tiny_clip_path, str(tmp_path / "stopped"))
    with pytest.raises(TrainingInterrupted):
        _train(cfg, inf_at=INF_AT, stop_after=STOP_AFTER)
    state = load_checkpoint(str(tmp_path / "stopped" / "last.pth.tar"))
    assert (state["epoch"], state["steps_done"]) == divmod(STOP_AFTER + 1, STEPS_PER_EPOCH)
    assert state["grad_scaler"]["scale"] == whole.grad_scaler.get_scale()  # saved after the halving
    resumed, probe = _train(cfg, inf_at=INF_AT)
    assert [s for s, _ in probe.scales] == list(range(STOP_AFTER + 1, EPOCHS * STEPS_PER_EPOCH))

    assert resumed.grad_scaler.state_dict() == whole.grad_scaler.state_dict()
    for name in whole.get_model_names():
        expected, got = whole._models[name].state_dict(), resumed._models[name].state_dict()
        for key, value in expected.items():
            assert torch.equal(got[key], value), key
